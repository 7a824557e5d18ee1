"""`ppo-alerts`: run the services, simulate, manage the local Kafka, measure performance."""

from __future__ import annotations

import argparse
import sys

from ppo_alerts.runner import SERVICES  # noqa: E402  (one list of services)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppo-alerts", description="PPO Premium Service notifications")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one service, or all of them in one process")
    run.add_argument("service", choices=(*SERVICES, "console", "all"))

    sim = sub.add_parser("simulate", help="replay events in virtual time (no Kafka, no SMTP)")
    sim.add_argument("--register", required=True)
    sim.add_argument("--directory", required=True)
    sim.add_argument("--events", required=True)
    sim.add_argument("--until", required=True)
    sim.add_argument("--start")
    sim.add_argument("--out", required=True)

    demo = sub.add_parser("demo", help="everything locally: Kafka, mail sink, services, a sample replay")
    demo.add_argument("--dir", default=".run", help="working folder (emptied first)")
    demo.add_argument("--exit-after", type=float, default=None, help="stop after N seconds (default: Ctrl-C)")

    kafka = sub.add_parser("kafka", help="the local Apache Kafka used for development and tests")
    kafka.add_argument("args", nargs=argparse.REMAINDER)

    postgres = sub.add_parser("postgres", help="a local PostgreSQL: the shared state of the cluster shape")
    postgres.add_argument("args", nargs=argparse.REMAINDER)

    oidc = sub.add_parser("oidc", help="a local OpenID Connect provider for the console (tests, local use)")
    oidc.add_argument("args", nargs=argparse.REMAINDER)

    bench = sub.add_parser(
        "bench", help="measure throughput, latency and scale on a local Kafka and SMTP sink; write the report",
        description="Every measurement of docs/performance.md in one run, on a local Kafka broker and SMTP sink it "
                    "starts itself. Prints one line per figure; the last is `rules/raw-consumer ratio: 0.NN`.")
    bench.add_argument("--quick", action="store_true",
                       help="small sizes, under two minutes; writes .run/bench/performance-quick.md by default")
    bench.add_argument("--output", help="where to write the report (default: docs/performance.md for a full run)")
    bench.add_argument("--only", metavar="NAME,...",
                       help="some of: rules, latency, simulation, scheduler, notifier (in that order)")
    bench.add_argument("--kafka", metavar="BOOTSTRAP", help="use this running broker instead of starting one")

    scheduler = sub.add_parser("scheduler", help="the scheduler's job store")
    scheduler.add_argument("action", choices=("rebuild",),
                           help="rebuild: empty the job store and rebuild it from the obligations topic")

    from ppo_alerts.register_cli import add_directory_parser, add_register_parser

    add_register_parser(sub)
    add_directory_parser(sub)

    from ppo_alerts.reports import add_parsers as add_report_parsers

    add_report_parsers(sub)  # `report timeliness|register` and `audit`

    from ppo_alerts.deadletters import add_parser as add_dead_letters_parser

    add_dead_letters_parser(sub)  # `dead-letters list|show|replay`
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        from ppo_alerts.simulate import main_simulate

        return main_simulate(args)
    if args.command == "demo":
        from ppo_alerts.demo import main_demo

        return main_demo(args)
    if args.command == "kafka":
        from ppo_alerts.localkafka import main as kafka_main

        return kafka_main(args.args, prog="ppo-alerts kafka")
    if args.command == "postgres":
        from ppo_alerts.localpostgres import main as postgres_main

        return postgres_main(args.args, prog="ppo-alerts postgres")
    if args.command == "oidc":
        from ppo_alerts.localoidc import main as oidc_main

        return oidc_main(args.args, prog="ppo-alerts oidc")
    if args.command in ("register", "directory"):
        from ppo_alerts.register_cli import main_directory, main_register

        return main_register(args) if args.command == "register" else main_directory(args)
    if args.command in ("report", "audit"):
        from ppo_alerts.reports import main_report

        return main_report(args)
    if args.command == "dead-letters":
        from ppo_alerts.deadletters import main_dead_letters

        return main_dead_letters(args)
    if args.command == "bench":
        from ppo_alerts.bench.command import main_bench

        return main_bench(args)
    if args.command == "scheduler":
        from services.scheduler.main import main_rebuild

        return main_rebuild()
    if args.command == "run":
        from ppo_alerts.runner import run_services

        return run_services([*SERVICES] if args.service == "all" else [args.service])
    return 2


if __name__ == "__main__":
    sys.exit(main())
