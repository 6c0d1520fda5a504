"""`credex-lab`: synthetic data, a local federation of processes, and the demonstration."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from credex.cli.render import markup_safe, terminal_console
from credex.cli.shared import cli_errors, fail, print_json
from credex.lab.bench import Plan, run_bench, verdicts, write_results
from credex.lab.compare import compare as compare_policies
from credex.lab.demo import run_demo
from credex.lab.federation import (
    FederationError,
    FederationState,
    attach,
    exit_on_signals,
    is_running,
    operator_tls,
    start,
    stop_recorded,
)
from credex.lab.scenario import ScenarioError, StepResult, load_scenario, run_scenario
from credex.lab.synth import DEFAULT_NODES, MAX_NODES, load_manifest
from credex.lab.synth import generate as generate_data
from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.tls import TlsIdentity
from credex.v1 import member_pb2, node_pb2
from credex.v1.member_pb2_grpc import MemberServiceStub
from credex.v1.node_pb2_grpc import NodeServiceStub

app = typer.Typer(
    help="credex-lab: synthetic federations, local processes, the demo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


Dir = Annotated[Path, typer.Option("--dir", help="The federation's folder.")]
Subjects = Annotated[int, typer.Option(min=1, help="How many synthetic subjects.")]
Seed = Annotated[int, typer.Option(help="Random seed; same seed, same data.")]
Nodes = Annotated[
    int,
    typer.Option(
        min=1,
        max=MAX_NODES,
        help="How many nodes: the 8 national and provincial ones, then city civic offices "
        "and consumer lenders.",
    ),
]


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Where to write the data set.")],
    subjects: Subjects = 1000,
    seed: Seed = 7,
    nodes: Nodes = DEFAULT_NODES,
) -> None:
    """Write a synthetic federation: per-node operator databases and configs, subjects, locator."""
    with cli_errors(), Progress(transient=True) as progress:
        task = progress.add_task("generating subjects", total=subjects)
        manifest = generate_data(
            out,
            subjects=subjects,
            seed=seed,
            nodes=nodes,
            progress=lambda n: progress.update(task, completed=n),
        )
    typer.echo(
        f"wrote {manifest.subjects} subjects for {len(manifest.nodes)} nodes "
        f"({', '.join(n.id for n in manifest.nodes)}) to {out}"
    )


@app.command()
def compare(
    policies: Annotated[list[Path], typer.Argument(help="Two or more scoring policy files.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the report.")],
    subjects: Subjects = 1000,
    seed: Seed = 7,
    data: Annotated[
        Path | None, typer.Option("--data", help="Use (or generate) the population here.")
    ] = None,
    nodes: Nodes = DEFAULT_NODES,
) -> None:
    """Score one synthetic population under each policy: scores.csv (score and band per
    subject and policy) and summary.json (distributions, band changes, rank correlation)."""
    with cli_errors():
        root = data or out / "population"
        existing = load_manifest(root) if (root / "federation.toml").is_file() else None
        wanted = (subjects, seed, nodes)
        manifest = (
            existing
            if existing is not None
            and (existing.subjects, existing.seed, len(existing.nodes)) == wanted
            else generate_data(root, subjects=subjects, seed=seed, nodes=nodes)
        )
        report = compare_policies(manifest, policies, out)
        table = Table(
            title=f"{report.subjects} subjects, as of {report.as_of}", title_justify="left"
        )
        for col in ("policy", "mean", "median", "stdev", "bands"):
            table.add_column(col)
        for p in report.policies:
            table.add_row(p.name, f"{p.mean:g}", f"{p.median:g}", f"{p.stdev:g}",
                          ", ".join(f"{k} {v}" for k, v in p.bands.items()))  # fmt: skip
        terminal_console().print(table)
        for pair in report.pairs:
            typer.echo(
                f"{pair.first} vs {pair.second}: {pair.band_changes} change band "
                f"({pair.share_changed:.1%}), Spearman {pair.spearman:.3f}"
            )
        typer.echo(f"wrote {out / 'scores.csv'} and {out / 'summary.json'}")


@app.command()
def up(dir: Dir, subjects: Subjects = 1000, seed: Seed = 7, nodes: Nodes = DEFAULT_NODES) -> None:
    """Start the directory and every node as background processes; wait until all serve."""
    exit_on_signals()
    with cli_errors():
        try:
            fed = start(dir, subjects=subjects, seed=seed, nodes=nodes)
        except FederationError as exc:
            raise fail(str(exc)) from None
        typer.echo(
            f"directory at {fed.directory_address}; {len(fed.manifest.nodes)} nodes; "
            f"stop with `credex-lab down --dir {dir}`"
        )


@app.command()
def down(dir: Dir) -> None:
    """Stop every process of the federation in DIR."""
    with cli_errors():
        try:
            stopped = stop_recorded(dir)
        except FederationError as exc:
            raise fail(str(exc)) from None
        typer.echo(f"stopped {stopped} processes")


async def _healthy(role: str, address: str, tls: TlsIdentity) -> bool:
    channel = (open_directory_channel if role == "directory" else open_channel)(address, tls)
    try:
        if role == "directory":
            await MemberServiceStub(channel).ListMembers(
                member_pb2.ListMembersRequest(), timeout=1.0
            )
        else:
            await NodeServiceStub(channel).Describe(node_pb2.DescribeRequest(), timeout=1.0)
    except grpc.aio.AioRpcError:
        return False
    finally:
        await channel.close(None)
    return True


@app.command()
def status(dir: Dir, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show each process of the federation in DIR and whether it answers."""
    with cli_errors():
        try:
            state = FederationState.load(dir)
        except FederationError as exc:
            raise fail(str(exc)) from None
        if state is None:
            raise fail(f"no federation is running in {dir}", 1)
        rows = []
        tls = operator_tls(dir)
        for p in state.processes:
            alive = is_running(p)
            healthy = alive and asyncio.run(_healthy(p.role, p.address, tls))
            rows.append({**p.__dict__, "alive": alive, "healthy": healthy})
        if json_out:
            print_json(rows)
        else:
            table = Table(title=f"Federation in {dir}", title_justify="left")
            for col in ("process", "role", "pid", "address", "state", "log"):
                table.add_column(col)
            for r in rows:
                state_text = (
                    "[green]serving[/green]"
                    if r["healthy"]
                    else ("[yellow]not answering[/yellow]" if r["alive"] else "[red]dead[/red]")
                )
                table.add_row(
                    r["name"], r["role"], str(r["pid"]), r["address"], state_text, r["log"]
                )
            terminal_console().print(table)
        if not all(r["healthy"] for r in rows):
            raise typer.Exit(1)


@app.command()
def scenario(
    file: Annotated[Path, typer.Argument(help="The scenario file (TOML).")],
    dir: Dir,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run a scenario's steps against the running federation in DIR and report each one;
    exit 1 if any expectation fails."""
    with cli_errors():
        try:
            plan = load_scenario(file)
            fed = attach(dir)
        except (ScenarioError, FederationError) as exc:
            raise fail(str(exc)) from None
        console = terminal_console()
        if not json_out:
            console.print(f"[bold]{escape(plan.name)}[/bold]  ({file})")
            if plan.description:
                console.print(escape(plan.description.strip()))

        def show(result: StepResult) -> None:
            if json_out:
                return
            mark = "[green]PASS[/green]" if result.passed else "[bold red]FAIL[/bold red]"
            got = result.got if result.got == result.expected else f"[bold]{result.got}[/bold]"
            console.print(
                f"{mark} {result.number:>2}. {escape(result.name)} — expected "
                f"{result.expected}, got {got}: {markup_safe(result.detail)} "
                f"[dim]({result.elapsed_ms:.0f} ms)[/dim]"
            )
            for failure in result.failures:
                console.print(f"       [red]✗[/red] {markup_safe(failure)}")

        try:
            report = asyncio.run(run_scenario(plan, fed, show))
        except ScenarioError as exc:
            raise fail(str(exc)) from None
        if json_out:
            print_json({**asdict(report), "passed": report.passed})
        else:
            subjects = ", ".join(f"{a} = {s}" for a, s in report.subjects.items())
            console.print(f"subjects: {subjects or 'none'}")
            total = len(report.steps)
            colour = "green" if report.passed else "red"
            console.print(
                f"[{colour}]{total - report.failed} of {total} steps as expected[/{colour}]"
            )
        if not report.passed:
            raise typer.Exit(1)


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option(help="Smaller sizes, shorter runs (under 2 minutes).")
    ] = False,
    dir: Annotated[Path, typer.Option("--dir", help="Where to keep data and logs.")] = Path(
        "var/bench"
    ),
    out: Annotated[Path, typer.Option(help="Where to write the figures as JSON.")] = Path(
        "bench-results.json"
    ),
) -> None:
    """Measure GetProfile against the bare gRPC ceiling, scaling with nodes and subjects, and
    peak memory; print a table and write the figures as JSON."""
    exit_on_signals()
    with cli_errors():
        plan = Plan.quick() if quick else Plan.full()
        console = terminal_console()
        try:
            results = run_bench(dir, plan, say=lambda text: console.print(escape(text)))
        except FederationError as exc:
            raise fail(str(exc)) from None
        write_results(results, out)
        table = Table(
            title=f"credex benchmark ({'quick' if quick else 'full'})", title_justify="left"
        )
        for col in ("measure", "value", "target", ""):
            table.add_column(col)
        table.add_row("profiles/s at 32 concurrent", f"{results.profiles_per_s:g}", "", "")
        table.add_row("ceiling/s at 32 concurrent", f"{results.ceiling_per_s:g}", "", "")
        table.add_row(
            "p50 / p99 at concurrency 1 (ms)", f"{results.p50_ms:g} / {results.p99_ms:g}", "", ""
        )
        table.add_row("ceiling p50 at concurrency 1 (ms)", f"{results.ceiling_p50_ms:g}", "", "")
        for nodes, p50 in results.p50_ms_by_nodes.items():
            table.add_row(f"p50 with {nodes} nodes (ms)", f"{p50:g}", "", "")
        for subjects, p50 in results.p50_ms_by_subjects.items():
            table.add_row(f"p50 with {subjects} subjects (ms)", f"{p50:g}", "", "")
        for what, value, target, met in verdicts(results, plan):
            table.add_row(what, value, target, "[green]met[/green]" if met else "[red]missed[/red]")
        console.print(table)
        typer.echo(f"wrote {out}")


@app.command()
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Where to keep data and logs.")] = Path(
        "var/demo"
    ),
    subjects: Subjects = 1000,
    seed: Seed = 7,
) -> None:
    """Grant, profile, refusals and revocation on a federation of real processes, then stop."""
    exit_on_signals()
    with cli_errors():
        try:
            run_demo(dir, subjects=subjects, seed=seed)
        except FederationError as exc:
            raise fail(str(exc)) from None


if __name__ == "__main__":
    app()
