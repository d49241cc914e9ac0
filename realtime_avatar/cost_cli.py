"""``avatar cost``: a month's bill for the deployed avatar, from ``avatar.yaml`` (``cost:`` and ``chat:``)."""

from __future__ import annotations

import argparse
import sys

from realtime_avatar import costs


def add_parser(commands: argparse._SubParsersAction) -> None:
    cost = commands.add_parser("cost", help="estimate a month on Cloud Run (L4 runtime, web, TURN, storage)")
    cost.add_argument("--profile", default="l4", help="config profile whose caps apply (default: l4)")
    cost.add_argument("--sessions", type=int, help="sessions a month (default: cost.usage)")
    cost.add_argument("--minutes", type=float, help="minutes per session (default: cost.usage)")
    cost.add_argument("--table", type=int, nargs="+", metavar="SESSIONS",
                      help="print the README's table for these sessions-per-month figures instead")
    cost.add_argument("--budget", action="store_true",
                      help="also find how many sessions a month fit in cost.monthly_budget_usd")


def run(args: argparse.Namespace) -> int:
    from realtime_avatar.config import Settings

    settings = Settings(profile=args.profile)
    if settings.cost is None:
        print("error [bad_config]: the config has no `cost:` section", file=sys.stderr)
        return 2
    chat = settings.chat
    caps = {"max_session_minutes": chat.max_session_minutes, "max_sessions": chat.max_sessions}
    if args.table:
        rows = [costs.estimate(settings.cost, sessions=n, minutes=args.minutes, **caps) for n in args.table]
        print(costs.format_table(rows))
        return 0
    result = costs.estimate(settings.cost, sessions=args.sessions, minutes=args.minutes, **caps)
    print(costs.format_estimate(result, settings.cost.monthly_budget_usd))
    print(f"caps (chat.*, enforced by the runtime): {settings.chat.max_session_minutes:g} min a session, "
          f"{settings.chat.max_sessions} sessions at once per instance, "
          f"{settings.cost.instance.max_instances} instance(s) at most")
    if args.budget:
        fits = costs.sessions_within_budget(settings.cost, minutes=args.minutes, **caps)
        print(f"${settings.cost.monthly_budget_usd:g}/month covers about {fits} sessions of "
              f"{result.minutes:g} min")
    return 0
