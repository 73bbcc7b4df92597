"""PNG plots of a benchmark run's JSON (matplotlib, bench-only venv)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ecdf(ax: Any, samples: list[float], label: str) -> None:
    ordered = sorted(samples)
    n = len(ordered)
    if n:
        ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (n={n})")


def latency_vs_calls(result: dict[str, Any], out: Path) -> Path:
    """Daemon-side DTMF->first request latency distributions, one curve per live-call count."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in result["inprocess"]["latency"]:
        _ecdf(ax, row["samples_ms"], f"{row['live_calls']:,} live calls")
    ax.set_xscale("log")
    ax.set_xlabel("ChannelDtmfReceived frame arrived -> first REST request sent (ms)")
    ax.set_ylabel("fraction of key presses")
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_title("keypress-ari decision latency vs live calls (in process, fake ARI)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def throughput(result: dict[str, Any], out: Path) -> Path:
    """Wire p99 vs offered rate for the daemon, the library app and the floor app."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, key in (("keypress-ari daemon", "inprocess"), ("aioari minimal app", "library"),
                      ("floor (raw asyncio)", "floor")):
        section = result.get(key) or {}
        steps = (section.get("throughput") or {}).get("steps") or []
        if steps:
            ax.plot([s["rate_per_s"] for s in steps], [s["wire"]["p99_ms"] for s in steps],
                    marker="o", label=f"{name}: wire p99")
            ax.plot([s["rate_per_s"] for s in steps], [s["wire"]["p50_ms"] for s in steps],
                    marker=".", linestyle="--", label=f"{name}: wire p50")
    ax.set_xlabel("key presses offered per second (bridged calls, one REST action each)")
    ax.set_ylabel("frame written -> request read at the fake ARI (ms)")
    ax.set_yscale("log")
    ax.set_title("Throughput ramp (one process, one core)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def end_to_end(result: dict[str, Any], out: Path) -> Path | None:
    """Asterisk-timestamped DTMF -> hangup for the daemon, the minimal ARI app, dialplan."""
    section = result.get("e2e") or {}
    variants = section.get("variants") or {}
    if not variants:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, row in variants.items():
        _ecdf(ax, row.get("samples_ms", []), name)
    ax.set_xlabel("DTMFEnd -> Hangup, Asterisk AMI timestamps (ms)")
    ax.set_ylabel("fraction of calls")
    ax.set_title("End to end on Asterisk: daemon vs minimal ARI app vs dialplan")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_all(result: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if result.get("inprocess", {}).get("latency"):
        made.append(latency_vs_calls(result, folder / "latency_vs_calls.png"))
    if result.get("inprocess", {}).get("throughput"):
        made.append(throughput(result, folder / "throughput.png"))
    e2e = end_to_end(result, folder / "e2e_latency.png")
    if e2e is not None:
        made.append(e2e)
    return made
