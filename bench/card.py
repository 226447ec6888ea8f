"""Render a zoo model card in a real browser: README.md -> HTML -> headless Chromium screenshot.

    python -m bench.card [DIR] [--sibling DIR ...] [--out bench/results] [--chromium /usr/bin/chromium]

DIR defaults to the 4bit-2of4 model that `python -m bench --accuracy` fine-tuned (bench/work/accuracy/
4bit-2of4-rt), with the other fine-tuned recipes there as siblings. The card is regenerated (`zoo card`),
its Markdown rendered to HTML by markdown-it-py (front matter shown as the metadata block, tables on),
and Chromium (Debian's `chromium`) takes a screenshot, so a person can look at what the Hub page would show.
Writes OUT/card_screenshot.png, and a copy of the card (README.md and its plot) under OUT/card_example/."""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 960px; margin: 24px auto;
       color: #1f2328; line-height: 1.5; font-size: 15px; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; }
th { background: #f6f8fa; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; font-size: 90%; }
pre { background: #f6f8fa; padding: 12px; overflow: auto; border-radius: 6px; font-size: 12px; }
pre code { background: none; padding: 0; }
img { max-width: 100%; }
details { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 12px; margin-bottom: 1em; }
"""


def split_front_matter(text: str) -> tuple[str, str]:
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return text[4:end], text[end + 5 :]
    return "", text


def render_html(readme: Path) -> str:
    from markdown_it import MarkdownIt

    meta, body = split_front_matter(readme.read_text())
    md = MarkdownIt("commonmark").enable("table")
    head = (
        (
            f"<details><summary>metadata (YAML front matter)</summary><pre><code>{html.escape(meta)}</code></pre>"
            "</details>"
        )
        if meta
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{readme.parent.name}</title>"
        f"<style>{CSS}</style></head><body>{head}{md.render(body)}</body></html>"
    )


def screenshot(page: Path, png: Path, chromium: str, width: int = 1100, height: int = 2600) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            page.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 or not png.is_file():
        sys.exit(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    work = Path("bench/work/accuracy")
    parser.add_argument("model", type=Path, nargs="?", default=work / "4bit-2of4-rt")
    parser.add_argument("--sibling", type=Path, action="append", default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"{args.model} is not a zoo checkpoint; run `python -m bench --accuracy` first or pass a directory")
    if not Path(args.chromium).exists():
        sys.exit(f"no Chromium at {args.chromium}: apt-get install chromium (Debian), or pass --chromium PATH")
    siblings = args.sibling
    if siblings is None:  # the other fine-tuned models of the same benchmark run
        siblings = sorted(
            p for p in args.model.parent.glob("*-rt") if p != args.model and (p / "config.json").is_file()
        )

    from typer.testing import CliRunner

    from zoo.cli import app

    cli_args = ["card", str(args.model)]
    for s in siblings:
        cli_args += ["--sibling", str(s)]
    result = CliRunner().invoke(app, cli_args)
    print(result.stdout + result.stderr, end="")
    if result.exit_code != 0:
        sys.exit(result.exit_code)

    example = args.out / "card_example"
    shutil.rmtree(example, ignore_errors=True)
    (example / "card").mkdir(parents=True)
    shutil.copy(args.model / "README.md", example / "README.md")
    plot = args.model / "card" / "accuracy_vs_size.png"
    if plot.is_file():
        shutil.copy(plot, example / "card" / plot.name)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "index.html"
        shutil.copytree(example / "card", Path(tmp) / "card")
        page.write_text(render_html(example / "README.md"))
        png = args.out / "card_screenshot.png"
        screenshot(page, png.resolve(), args.chromium)
    print(f"card of {args.model} rendered by {args.chromium} -> {png}")


if __name__ == "__main__":
    main()
