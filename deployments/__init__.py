"""Ray Serve deployments: thin wrappers that give a stage resources, a health check and a handle.

They know nothing of models: each owns a stage from ``realtime_avatar.stages``, built from the
settings the app builder resolved (passed in, so every replica runs the driver's exact config).
"""

from deployments.loopback import keep_replica_grpc_on_loopback

keep_replica_grpc_on_loopback()
