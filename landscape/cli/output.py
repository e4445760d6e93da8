"""Where the commands write: one process (rank 0) writes results, pages and images; torchrun's process group."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from landscape.cli.parsing import CLIError

__all__ = ["rank", "process_group", "Writer"]


def rank() -> int:
    """This process's rank in the default process group (0 outside one)."""
    d = torch.distributed
    return d.get_rank() if d.is_available() and d.is_initialized() else 0


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join a gloo group when launched by torchrun (``WORLD_SIZE`` > 1) and leave it afterwards."""
    d = torch.distributed
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and d.is_available() and not d.is_initialized():
        d.init_process_group("gloo")
        started = True
    try:
        yield
        if started:  # leave together: gloo torn down under a rank still working aborts it (SIGABRT)
            d.barrier()
    finally:
        if started:
            d.destroy_process_group()


def _replace(f: Path, save: Callable[[Path], Any]) -> Path:
    """``save(tmp)`` to a hidden file beside ``f``, then rename it over ``f``: a failed write keeps the old ``f``.

    plotly and matplotlib write their files in place, so a write that fails midway (disk full, interrupted)
    left a cut-off page or image where the previous run's was. The temporary name keeps ``f``'s suffix, from
    which matplotlib takes the format, and its directory, beside which plotly looks for ``plotly.min.js``.
    """
    tmp = f.with_name(f".{f.stem}.partial{f.suffix}")
    try:
        save(tmp)
        os.replace(tmp, f)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return f


def _write_plotlyjs(bundle: Path) -> None:
    """Write plotly.js as ``bundle`` (atomically) unless a complete copy is there.

    plotly writes it in place and only when it is missing, so a copy cut off by a failed write stayed for good
    and every page beside it showed nothing; a copy of another size (cut off, or of another plotly) is rewritten.
    """
    from plotly.offline import get_plotlyjs

    from landscape.trajectory.files import write_atomic

    js = get_plotlyjs().encode("utf-8")
    if not bundle.is_file() or bundle.stat().st_size != len(js):
        write_atomic(bundle, js, durable=False)


class Writer:
    """Writes results and figures on rank 0 only, and reports what it wrote."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.out = Path(args.out)
        self.html, self.png, self.quiet = not args.no_html, not args.no_png, args.quiet
        self.plotlyjs = "cdn" if args.cdn else "directory"  # one plotly.min.js per output folder
        self.rank = rank()
        self.written: list[Path] = []
        self.replaced: set[Path] = set()  # files of an earlier run this one overwrote: said in the report
        if self.rank == 0:
            self.write(self.out, lambda: self.out.mkdir(parents=True, exist_ok=True))

    @staticmethod
    def write(path: Path, write: Callable[[], Any]) -> Any:
        """``write()``, with a failure to write ``path`` (taken, not writable, disk full) reported as a CLIError.

        Raises:
            CLIError: If ``write`` raised an ``OSError``.
        """
        try:
            return write()
        except OSError as e:
            raise CLIError(f"cannot write {path}: {e.strerror or e}; choose another --out or --name") from None

    def result(self, stem: str, result: Any) -> None:
        """Save ``result`` as ``<out>/<stem>.npz``."""
        if self.rank == 0:
            f = self.out / f"{stem}.npz"
            self.note(f)
            self.written.append(self.write(f, lambda: result.save(f)))

    def figure(self, stem: str, draw: Callable[[str], Any], html: bool = True, png: bool = True) -> None:
        """Write ``draw(backend)`` as ``<stem>.html`` (plotly) and ``<stem>.png`` (matplotlib), unless turned off."""
        if self.rank != 0:
            return
        from landscape.plot.files import save_html, save_png

        if self.html and html:
            f = self.out / f"{stem}.html"
            if self.plotlyjs == "directory":
                bundle = self.out / "plotly.min.js"
                self.write(bundle, lambda: _write_plotlyjs(bundle))
            self.note(f)
            self.written.append(
                self.write(f, lambda: _replace(f, lambda tmp: save_html(draw("plotly"), tmp, plotlyjs=self.plotlyjs)))
            )
        if self.png and png:
            f = self.out / f"{stem}.png"
            self.note(f)
            self.written.append(self.write(f, lambda: _replace(f, lambda tmp: save_png(draw("matplotlib"), tmp))))

    def note(self, f: Path) -> None:
        """Remember that ``f`` is there already (a result of an earlier run), before it is overwritten."""
        if f.exists():
            self.replaced.add(f)

    def report(self, lines: Sequence[str] = ()) -> None:
        """Print ``lines`` and the files written (rank 0, unless ``--quiet``)."""
        if self.rank == 0 and not self.quiet:
            for line in lines:
                print(line)
            for p in self.written:
                print(f"wrote {p}" + (" (replaced the earlier file; --name keeps both)" if p in self.replaced else ""))
