"""Build the course site (MkDocs + Material + mkdocs-jupyter) into build/site/: `make site`.

    python scripts/build_site.py [--executed DIR] [--out DIR] [--no-check]
    python scripts/build_site.py check [SITE_DIR]      # only the internal-link check of a built site

What goes in: README.md, docs/*.md, and from every chapter folder (pattern `[0-9][0-9]-*`, read at build
time, so a new chapter or lab needs no config) its markdown (chapter README, 01-Theory/*.md, lab READMEs)
and its notebooks. A notebook is published as executed when the notebook run left a snapshot of it
(`scripts/notebooks.py run --snapshots build/executed`, which `make test` does); otherwise the committed,
output-less notebook is published with a visible note saying so. Each page of a notebook opens with
where its outputs come from (date, profile, device, passed/failed).

How: the pages are copied into a staging folder (build/site-src/) at their repository paths, with the
few rewrites a static site needs: a link to a folder goes to its README (or a generated index), a
link to another repository file (lab.yaml, a .py) copies that file into the site, a link to a path
that does not exist (a lab still being written) becomes plain text and is listed as a warning, and a
notebook's markdown links point at the .html pages MkDocs writes. GitHub-style markdown is made
Python-Markdown safe on the way (a blank line before a list, nested items indented 4 spaces,
markdown inside <details>). The nav (chapters -> labs -> stages)
and build/site-mkdocs.yml are generated from the tree; then `mkdocs build` and the link check run.
Notebook HTML is cached by content in build/.cache/ (a rebuild converts only the notebooks that changed).
Math ($...$) renders with the MathJax copy that the `jupyter-server-mathjax` package ships, so neither
the build nor viewing the pages needs the internet (the site also works opened from file://).

This file is also the MkDocs hook module named in the generated config (its on_* functions).
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import shutil
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
EXECUTED = BUILD / "executed"
SITE = BUILD / "site"
CACHE = BUILD / ".cache" / "mkdocs-jupyter"
CHAPTER_PATTERN = "[0-9][0-9]-*"
SKIP_PARTS = {"outputs", ".ipynb_checkpoints", "__pycache__"}
SNAPSHOT_KEY = "course_snapshot"  # written by scripts/nbmake_hooks/course_nbmake_plugin.py
DOCS_ORDER = ["learning_path.md", "hardware.md", "troubleshooting.md", "glossary.md", "AUTHORING.md",
              "notebook_timings.md"]  # docs/ pages first in this order, any other after them by name
STATIC_LIMIT = 1_000_000  # a linked repository file larger than this is not copied into the site
MARKDOWN_LINK = re.compile(r"(!?\[(?:[^\[\]]|\[[^\]]*\])*\])\(\s*([^)\s]+)((?:\s+\"[^\"]*\")?)\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
LIST_ITEM = re.compile(r"^\s{0,3}([-*+]|\d+[.)])\s+\S")
NESTED_ITEM = re.compile(r"^( {1,3})([-*+]|\d+[.)])\s+\S")
EXTERNAL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//|#)")  # http:, mailto:, data:, //host, #anchor


# --- what goes into the site ---------------------------------------------------------------------

def chapter_folders(root: Path = ROOT) -> list[Path]:
    return sorted(path for path in root.glob(CHAPTER_PATTERN) if path.is_dir())


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(part in SKIP_PARTS or part.startswith(".") for part in parts)


def course_pages(root: Path = ROOT) -> list[str]:
    """Repository-relative paths of the site's pages: README, docs/*.md, chapters' markdown and notebooks."""
    pages = ["README.md"] if (root / "README.md").exists() else []
    pages += [f"docs/{p.name}" for p in sorted((root / "docs").glob("*.md"))]
    for chapter in chapter_folders(root):
        found = [p for p in chapter.rglob("*") if p.suffix in {".md", ".ipynb"} and p.is_file()
                 and not _skipped(p, root)]
        pages += sorted(p.relative_to(root).as_posix() for p in found)
    return pages


def page_url(rel: str) -> str:
    """The HTML file MkDocs writes for a page (use_directory_urls: false; README is the folder's index)."""
    folder, name = posixpath.split(rel)
    stem = posixpath.splitext(name)[0]
    return posixpath.join(folder, "index.html" if stem in {"README", "index"} else f"{stem}.html")


# --- staging: copies of the pages with their links made to work in a static site -------------------

class Stage:
    """The staging folder MkDocs builds from, and what the copies needed (warnings, extra files)."""

    def __init__(self, root: Path, folder: Path, executed: Path) -> None:
        self.root, self.folder, self.executed = root, folder, executed
        self.pages: list[str] = []  # every staged page (nav pages and linked extra pages)
        self.indexes: set[str] = set()  # folders that got a generated index.md
        self.warnings: list[str] = []
        self.notebook_notes: dict[str, str] = {}  # notebook -> "snapshot" | "stale snapshot" | "no outputs"

    # links ---------------------------------------------------------------------------------------
    def folder_has_pages(self, rel_dir: str) -> bool:
        prefix = rel_dir.rstrip("/") + "/"
        return any(page.startswith(prefix) for page in self.pages)

    def resolve(self, source: str, target: str) -> tuple[str | None, str]:
        """(repository-relative page or file the link should point at, or None when it cannot), fragment."""
        path, _, fragment = target.partition("#")
        path = unquote(path.split("?", 1)[0])
        if not path:
            return source, fragment
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if joined == "..." or joined.startswith("../") or joined == "..":
            return None, fragment  # outside the repository
        rel_dir = "" if joined == "." else joined
        file = self.root / rel_dir
        if not file.exists() or (rel_dir and _skipped(file, self.root)):
            return None, fragment
        if not file.is_dir():
            return joined, fragment
        readme = posixpath.join(rel_dir, "README.md")
        if (self.root / readme).exists():
            return readme, fragment
        if rel_dir and self.folder_has_pages(rel_dir):
            self.indexes.add(rel_dir)
            return posixpath.join(rel_dir, "index.md"), fragment
        return None, fragment

    def link_target(self, source: str, target: str, for_notebook: bool) -> str | None:
        """The link text to write into the staged copy of `source`, or None to drop the link."""
        if EXTERNAL.match(target):
            return target
        resolved, fragment = self.resolve(source, target)
        if resolved is None:
            return None
        if resolved.endswith(".md") and resolved not in self.pages and not resolved.endswith("/index.md") \
                and resolved != "index.md":
            self.pages.append(resolved)  # a markdown file linked from a page (datasets/README.md): publish it
        elif not resolved.endswith((".md", ".ipynb")):
            file = self.root / resolved
            if file.stat().st_size > STATIC_LIMIT:
                return None
            destination = self.folder / resolved
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, destination)  # lab.yaml, a script: the browser shows it as text
        elif resolved.endswith(".ipynb") and resolved not in self.pages:
            return None  # a notebook the site does not publish (outside the chapters)
        if for_notebook and resolved.endswith((".md", ".ipynb")):
            resolved = page_url(resolved)  # notebook HTML is not link-rewritten by MkDocs
        relative = posixpath.relpath(resolved, posixpath.dirname(source) or ".")
        return relative + (f"#{fragment}" if fragment else "")

    def rewrite_markdown(self, source: str, text: str, for_notebook: bool = False) -> str:
        """Rewrite relative links outside code fences; GitHub-style markdown made Python-Markdown safe."""
        out: list[str] = []
        fenced = False
        previous = ""
        for line in text.split("\n"):
            if FENCE.match(line):
                fenced = not fenced
                out.append(line)
                previous = line
                continue
            if not fenced:
                line = MARKDOWN_LINK.sub(lambda m: self._link(source, m, for_notebook), line)
                if not for_notebook:
                    # GitHub starts a list right after a paragraph line; Python-Markdown needs a blank line
                    if LIST_ITEM.match(line) and previous.strip() and not LIST_ITEM.match(previous) \
                            and not previous.startswith((" ", "\t")) and not previous.lstrip().startswith("|"):
                        out.append("")
                    # GitHub nests a list item indented by 2-3 spaces; Python-Markdown needs 4
                    nested = NESTED_ITEM.match(line)
                    if nested and (LIST_ITEM.match(previous) or previous.startswith(" ")):
                        line = "    " + line[len(nested.group(1)):]
                    line = re.sub(r"<details>", '<details markdown="1">', line)
            out.append(line)
            previous = line
        return "\n".join(out)

    def _link(self, source: str, match: re.Match, for_notebook: bool) -> str:
        label, target, title = match.group(1), match.group(2), match.group(3)
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        rewritten = self.link_target(source, target, for_notebook)
        if rewritten is None:
            self.warnings.append(f"{source}: link to {target} does not resolve in the site; shown as text")
            return label[1:-1] if not label.startswith("!") else label[2:-1]
        return f"{label}({rewritten}{title})"

    # pages ---------------------------------------------------------------------------------------
    def stage_markdown(self, rel: str) -> None:
        text = (self.root / rel).read_text(encoding="utf-8")
        target = self.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.rewrite_markdown(rel, text), encoding="utf-8")

    def stage_notebook(self, rel: str) -> None:
        import nbformat

        committed = nbformat.read(str(self.root / rel), as_version=4)
        snapshot_file = self.executed / rel
        if snapshot_file.exists():
            try:
                nb = nbformat.read(str(snapshot_file), as_version=4)
            except Exception as error:  # a truncated snapshot: publish the committed notebook instead
                self.warnings.append(f"{rel}: unreadable snapshot {snapshot_file} ({error!r})")
                nb = None
        else:
            nb = None
        if nb is not None:
            stale = _code(nb) != _code(committed)
            self.notebook_notes[rel] = "stale snapshot" if stale else "snapshot"
            banner = snapshot_banner(nb.metadata.get(SNAPSHOT_KEY, {}), stale)
        else:
            nb = committed
            self.notebook_notes[rel] = "no outputs"
            banner = no_output_banner(self._skip_reason(rel))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = self.rewrite_markdown(rel, cell.source, for_notebook=True)
        first_is_title = bool(nb.cells) and nb.cells[0].cell_type == "markdown" and \
            nb.cells[0].source.lstrip().startswith("# ")
        note = nbformat.v4.new_markdown_cell(banner)
        note["id"] = "course-site-note"  # a fixed id keeps the staged file identical between builds (cache)
        nb.cells.insert(1 if first_is_title else 0, note)
        target = self.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))

    def _skip_reason(self, rel: str) -> str:
        """Why the CPU notebook run does not execute this notebook's lab, if its lab.yaml says so."""
        try:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from notebooks import lab_requirements

            needs = lab_requirements(self.root / rel)
        except Exception:
            return ""
        finally:
            sys.path.pop(0)
        if needs.get("accelerator") == "cuda":
            return "這個 lab 需要 CUDA (lab.yaml: accelerator: cuda),只有在 GPU 機器上的執行才會產生快照。"
        return ""

    def stage_index(self, rel_dir: str) -> None:
        """A generated index.md for a folder without README: links to the pages below it."""
        entries = []
        for page in self.pages:
            if page.startswith(rel_dir + "/"):
                rest = page[len(rel_dir) + 1:]
                entries.append(f"- [{rest}]({rest})")
        name = posixpath.basename(rel_dir)
        text = f"# {name}\n\n這個資料夾還沒有 README;以下是它的頁面。\n\n" + "\n".join(entries) + "\n"
        target = self.folder / rel_dir / "index.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _code(nb) -> list[str]:  # noqa: ANN001 - a NotebookNode
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def snapshot_banner(note: dict, stale: bool) -> str:
    when = str(note.get("executed_utc", ""))[:16].replace("T", " ")
    where = ", ".join(part for part in [f"`{note['profile']}` profile" if note.get("profile") else "",
                                        note.get("device", "")] if part)
    lines = [f"以下輸出來自 notebook 測試執行時存下的執行快照 (executed snapshot)"
             f"{f'：{when} UTC' if when else ''}{f'，{where}' if where else ''}。"]
    kind = "info"
    status = note.get("status", "passed")
    if status != "passed":
        kind = "failure"
        cell = note.get("failing_cell")
        at = f"第 {cell + 1} 個 cell " if isinstance(cell, int) else ""
        error = note.get("error", "").replace("`", "'")
        lines.append(f"**這次執行{at}{'逾時' if status == 'timed out' else '失敗'}** ({status}): `{error}`;"
                     "之後的 cell 沒有輸出。")
    if stale:
        kind = "warning" if kind == "info" else kind
        lines.append("**注意**:notebook 在這次執行之後改過,程式碼與輸出可能不一致;重跑 `make test` 即可更新。")
    body = "".join(f"<p>{_inline_code(line)}</p>" for line in lines)
    return f'<div class="admonition {kind}"><p class="admonition-title">執行快照 (executed snapshot)</p>{body}</div>'


def no_output_banner(reason: str) -> str:
    text = ("這一頁是提交版本的 notebook,<strong>沒有執行輸出</strong>(notebook 一律去除輸出後提交)。"
            "執行 <code>make test</code>(或 <code>make smoke LAB=…</code>)會存下執行快照,之後 "
            "<code>make site</code> 就會顯示每個 cell 的輸出。")
    extra = f"<p>{reason}</p>" if reason else ""
    return (f'<div class="admonition warning"><p class="admonition-title">沒有輸出 (no outputs)</p>'
            f"<p>{text}</p>{extra}</div>")


def _inline_code(text: str) -> str:
    """`code` and **bold** of a banner line as HTML (the banner is raw HTML inside a markdown cell)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


# --- nav and config ------------------------------------------------------------------------------

def title_of(path: Path) -> str:
    """The first `# ` heading of a markdown file, else its name."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return re.sub(r"[`*]", "", line[2:]).strip()
    return path.stem


def _stage_label(rel: str) -> str:
    return posixpath.splitext(posixpath.basename(rel))[0].replace("_", " ")


def folder_nav(pages: list[str], rel_dir: str, root: Path, indexes: set[str]) -> list:
    """Nav of one folder: its README (the section's own page), other markdown, notebooks, then subfolders."""
    prefix = rel_dir + "/"
    here = [p for p in pages if p.startswith(prefix) and "/" not in p[len(prefix):]]
    below = sorted({p[len(prefix):].split("/", 1)[0] for p in pages
                    if p.startswith(prefix) and "/" in p[len(prefix):]})
    nav: list = []
    readme = prefix + "README.md"
    if readme in here:
        nav.append(readme)
    elif rel_dir in indexes:
        nav.append(prefix + "index.md")
    nav += [{title_of(root / p): p} for p in sorted(here) if p.endswith(".md") and p != readme]
    nav += [{_stage_label(p): p} for p in sorted(here) if p.endswith(".ipynb")]
    for name in below:
        sub = folder_nav(pages, prefix + name, root, indexes)
        if sub:
            nav.append({name: sub})
    return nav


def build_nav(nav_pages: list[str], root: Path, indexes: set[str]) -> list:
    nav: list = [{"首頁 (Home)": "README.md"}] if "README.md" in nav_pages else []
    docs = [p for p in nav_pages if p.startswith("docs/")]
    ordered = sorted(docs, key=lambda p: (DOCS_ORDER.index(p[5:]) if p[5:] in DOCS_ORDER else len(DOCS_ORDER), p))
    if ordered:
        nav.append({"課程文件 (docs)": [{title_of(root / p): p} for p in ordered]})
    for chapter in chapter_folders(root):
        sub = folder_nav(nav_pages, chapter.name, root, indexes)
        if sub:
            nav.append({chapter.name: sub})
    return nav


MATHJAX_CONFIG = """// MathJax 2, the copy that the jupyter-server-mathjax package ships (no internet needed, works from
// file://). It typesets only the arithmatex spans of markdown pages and the markdown cells of notebooks.
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  tex2jax: {
    inlineMath: [["\\\\(", "\\\\)"], ["$", "$"]],
    displayMath: [["\\\\[", "\\\\]"], ["$$", "$$"]],
    processEscapes: true,
    ignoreClass: "md-content|md-sidebar|md-header|md-footer",
    processClass: "arithmatex|jp-MarkdownOutput|md-nav__link"
  },
  "HTML-CSS": {availableFonts: [], webFont: "STIX-Web", imageFont: null},
  messageStyle: "none",
  showMathMenu: false
};
"""

EXTRA_CSS = """/* Course site: wider content, notebook outputs that scroll instead of overflowing. */
.md-grid { max-width: 1440px; }
.jupyter-wrapper .jp-OutputArea-output pre { white-space: pre; overflow-x: auto; }
"""


def mathjax_source() -> Path | None:
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    return static if (static / "MathJax.js").exists() else None


def copy_mathjax(stage: Path) -> bool:
    """Copy what the config above loads: MathJax.js, its combined TeX/HTML-CSS config, extensions, fonts."""
    source = mathjax_source()
    if source is None:
        return False
    target = stage / "assets" / "mathjax"
    (target / "config").mkdir(parents=True, exist_ok=True)
    for name in ["MathJax.js", "LICENSE", "config/TeX-AMS-MML_HTMLorMML-full.js"]:
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    unused = shutil.ignore_patterns("a11y", "SVG")  # accessibility maps; SVG font data without its output jax
    for part in ["extensions", "jax", "fonts"]:
        shutil.copytree(source / part, target / part, dirs_exist_ok=True, ignore=unused)
    return True


def mkdocs_config(docs_dir: Path, site_dir: Path, nav: list, math: bool, cache_dir: Path) -> str:
    import yaml

    config = {
        "site_name": "LLM 工程實戰課程 (Hands-on LLM Engineering)",
        "docs_dir": str(docs_dir),
        "site_dir": str(site_dir),
        "use_directory_urls": False,
        "theme": {"name": "material", "language": "zh-TW", "font": False,
                  "features": ["navigation.indexes", "navigation.sections", "navigation.top", "toc.follow",
                               "content.code.copy"]},
        "plugins": [{"search": {}}, {"offline": {}},
                    {"mkdocs-jupyter": {"include": ["*.ipynb"], "execute": False, "allow_errors": True,
                                        "include_source": True, "ignore_h1_titles": True, "theme": "light", "cache": True,
                                        "cache_dir": str(cache_dir)}}],
        "markdown_extensions": [
            "tables", "admonition", "attr_list", "md_in_html", "footnotes", "def_list",
            {"toc": {"permalink": True, "slugify": "__USLUGIFY__"}},
            "pymdownx.details", {"pymdownx.arithmatex": {"generic": True}},
            {"pymdownx.superfences": {"custom_fences": [
                {"name": "mermaid", "class": "mermaid", "format": "__MERMAID__"}]}},
            {"pymdownx.highlight": {"use_pygments": True}}, "pymdownx.inlinehilite", "pymdownx.tasklist",
        ],
        "extra_css": ["assets/course.css"],
        "extra_javascript": ["assets/mathjax-config.js", "assets/mathjax/MathJax.js"] if math else [],
        "hooks": [str(Path(__file__).resolve())],
        "validation": {"nav": {"omitted_files": "ignore"}, "links": {"not_found": "warn", "anchors": "ignore",
                                                                     "unrecognized_links": "ignore"}},
        "nav": nav,
    }
    text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False, width=200)
    text = text.replace("__USLUGIFY__", "!!python/object/apply:pymdownx.slugs.slugify {kwds: {case: lower}}")
    return text.replace("__MERMAID__", "!!python/name:pymdownx.superfences.fence_code_format")


# --- MkDocs hooks (this module is named in the generated mkdocs.yml) -------------------------------

NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
STYLE_BLOCK = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL)


def on_config(config):  # noqa: ANN001 - MkDocs hook signature
    """nbconvert makes a Jinja environment per notebook and compiles its templates again each time (about
    half the build); one shared in-memory bytecode cache compiles each template once per build."""
    import jinja2
    from nbconvert.exporters.templateexporter import TemplateExporter

    if not getattr(TemplateExporter, "_course_bytecode_cache", None):
        class MemoryBytecodeCache(jinja2.BytecodeCache):
            def __init__(self) -> None:
                self.store: dict[str, bytes] = {}

            def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                if bucket.key in self.store:
                    bucket.bytecode_from_string(self.store[bucket.key])

            def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                self.store[bucket.key] = bucket.bytecode_to_string()

        cache = MemoryBytecodeCache()
        create = TemplateExporter._create_environment

        def create_with_cache(self):  # noqa: ANN001, ANN202
            environment = create(self)
            environment.bytecode_cache = cache
            return environment

        TemplateExporter._create_environment = create_with_cache
        TemplateExporter._course_bytecode_cache = cache
    return config


def on_page_content(html: str, page, config, files):  # noqa: ANN001 - MkDocs hook signature
    """Notebook pages: drop nbconvert's MathJax loader (a CDN URL; the site's own MathJax typesets), and
    move the ~0.6 MB of JupyterLab CSS inlined into every notebook page into one shared file."""
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    html = NBCONVERT_MATHJAX.sub("", html)
    css = "\n".join(STYLE_BLOCK.findall(html))
    if not css:
        return html
    import hashlib

    name = f"assets/notebook/{hashlib.sha256(css.encode()).hexdigest()[:12]}.css"
    target = Path(config["site_dir"]) / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(css, encoding="utf-8")
    href = posixpath.relpath(name, posixpath.dirname(page.file.dest_uri) or ".")
    html = STYLE_BLOCK.sub("", html)
    return f'<link rel="stylesheet" href="{href}">\n{html}'


# --- building ------------------------------------------------------------------------------------

def build(out: Path = SITE, executed: Path = EXECUTED, root: Path = ROOT, quiet: bool = True,
          cache_dir: Path = CACHE) -> dict:
    """Stage, configure and build the site into `out`; returns what it did (counts, warnings, seconds).

    `cache_dir` keeps each notebook's HTML by content hash (mkdocs-jupyter's cache): a rebuild converts
    only the notebooks that changed."""
    started = time.perf_counter()
    out = out.resolve()
    stage_dir = out.parent / f"{out.name}-src"
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    stage = Stage(root, stage_dir, executed.resolve())
    nav_pages = course_pages(root)
    stage.pages = list(nav_pages)
    done: set[str] = set()
    while len(done) < len(stage.pages):  # linked markdown outside the nav joins while staging
        for rel in [p for p in stage.pages if p not in done]:
            done.add(rel)
            if rel.endswith(".ipynb"):
                stage.stage_notebook(rel)
            else:
                stage.stage_markdown(rel)
    for rel_dir in sorted(stage.indexes):
        if not (root / rel_dir / "README.md").exists():
            stage.stage_index(rel_dir)
    math = copy_mathjax(stage_dir)
    if not math:
        stage.warnings.append("jupyter-server-mathjax is not installed: math is shown as TeX source")
    (stage_dir / "assets").mkdir(exist_ok=True)
    (stage_dir / "assets" / "mathjax-config.js").write_text(MATHJAX_CONFIG, encoding="utf-8")
    (stage_dir / "assets" / "course.css").write_text(EXTRA_CSS, encoding="utf-8")
    nav = build_nav(nav_pages, root, stage.indexes)
    config_file = out.parent / f"{out.name}-mkdocs.yml"
    config_file.write_text(mkdocs_config(stage_dir, out, nav, math, cache_dir.resolve()), encoding="utf-8")

    import logging

    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    logging.getLogger("mkdocs").setLevel(logging.ERROR if quiet else logging.WARNING)
    mkdocs_build(load_config(str(config_file)))
    notes = list(stage.notebook_notes.values())
    return {"site": out, "pages": len(stage.pages), "notebooks": len(notes),
            "executed": notes.count("snapshot"), "stale": notes.count("stale snapshot"),
            "no_outputs": notes.count("no outputs"), "warnings": stage.warnings,
            "seconds": time.perf_counter() - started}


# --- link check ----------------------------------------------------------------------------------

class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"href", "src"} and value:
                self.links.append(value)


def check_links(site: Path) -> list[str]:
    """Every href/src of every built page that is not external must name a file inside the site."""
    site = site.resolve()
    broken: list[str] = []
    for page in sorted(site.rglob("*.html")):
        if page == site / "404.html":
            continue  # served by a web server for any missing path, so MkDocs writes its links from the root
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        for link in parser.links:
            if EXTERNAL.match(link) and not link.startswith("file:"):
                continue
            path = unquote(urlsplit(link).path)
            if not path:
                continue
            target = (page.parent / path).resolve() if not path.startswith("/") else Path("/nonexistent")
            if path.endswith("/"):
                target = target / "index.html"
            if not target.is_relative_to(site) or not target.is_file():
                broken.append(f"{page.relative_to(site)}: {link}")
    return broken


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        site = Path(argv[1]) if len(argv) > 1 else SITE
        broken = check_links(site)
        print("\n".join(f"BROKEN LINK {line}" for line in broken) or f"All internal links of {site} resolve.")
        return 1 if broken else 0
    parser = argparse.ArgumentParser(prog="build_site.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executed", type=Path, default=EXECUTED, help="executed snapshots (default build/executed)")
    parser.add_argument("--out", type=Path, default=SITE, help="site folder (default build/site)")
    parser.add_argument("--no-check", action="store_true", help="skip the internal-link check")
    args = parser.parse_args(argv)
    result = build(args.out, args.executed)
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    site = result["site"]
    shown = os.path.relpath(site, Path.cwd())
    print(f"Built {shown}/ in {result['seconds']:.1f} s: {result['pages']} pages, {result['notebooks']} notebooks "
          f"({result['executed']} executed snapshots, {result['stale']} older than their notebook, "
          f"{result['no_outputs']} without outputs). Open {site / 'index.html'} in a browser.")
    if args.no_check:
        return 0
    broken = check_links(site)
    for line in broken:
        print(f"BROKEN LINK {line}", file=sys.stderr)
    print(f"Link check: {len(broken)} broken internal link(s).")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
