"""The quality metrics, one module each; all of them read the decoded output, never pipeline internals."""
