#!/usr/bin/env python3
"""Fails when two modules of a crate import each other, directly or around a longer circle.

For every crate of the workspace (a directory with src/lib.rs or src/main.rs), each .rs file is a module; every
`crate::a::b` or `super::x` path in it is a use of another module. Uses are compared between siblings (modules
with the same parent): a use from `a::b` of `crate::c::d` is an edge a -> c at the top level, and a use of
`crate::a::e` from `a::b` is an edge b -> e inside `a`. A module using its own parent's items (`super::Item` from a
child) is how Rust modules are built and is not counted. Any cycle among siblings is reported.

Usage: scripts/check-imports.py [crate dir ...]   (default: every workspace crate)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def module_of(src: Path, f: Path) -> tuple:
    rel = f.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def uses(text: str) -> list:
    """Every path after crate:: or super:: (groups expanded), as (anchor, [segments])."""
    out = []
    for m in USE_GROUP.finditer(text):
        base = [s for s in m.group(2).split("::") if s]
        for item in m.group(3).split(","):
            item = item.strip().split(" as ")[0].strip()
            if not item or item == "self":
                out.append((m.group(1), base))
            elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$", item):
                out.append((m.group(1), base + item.split("::")))
    for m in PATH.finditer(text):
        out.append((m.group(1), [s for s in m.group(2).split("::") if s]))
    return out


def check_crate(crate: Path) -> list:
    src = crate / "src"
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f): f for f in files}
    edges = {}
    for mod_path, f in modules.items():
        text = strip_comments(f.read_text())
        # Inline test modules may use anything of their parent.
        text = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests", text)[0]
        for anchor, segs in uses(text):
            if anchor == "crate":
                target = segs
            else:
                base = list(mod_path)
                while segs and segs[0] == "super":
                    segs = segs[1:]
                    base = base[:-1]
                # `super::x` from a file: its parent module's x.
                target = base[:-1] + segs if base else segs
            # The longest prefix of the target that is a module.
            t = tuple(target)
            while t and t not in modules:
                t = t[:-1]
            src_m = mod_path
            # Compare at the level of the common parent.
            common = 0
            while common < min(len(src_m), len(t)) and src_m[common] == t[common]:
                common += 1
            if common == len(src_m) or common == len(t):
                continue  # an ancestor or a descendant: not a sibling use
            a, b = src_m[: common + 1], t[: common + 1]
            edges.setdefault(a, set()).add(b)
    # Cycles among siblings (DFS).
    problems = []
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                cyc = stack[stack.index(m):] + [m]
                problems.append(" -> ".join("::".join(x) for x in cyc))
            elif not state.get(m):
                visit(m, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if not state.get(n):
            visit(n, [])
    return problems


def main() -> int:
    # Crates sit one or two levels down (sdk/rust).
    manifests = list(ROOT.glob("*/Cargo.toml")) + list(ROOT.glob("*/*/Cargo.toml"))
    crates = [Path(a) for a in sys.argv[1:]] or sorted(
        p.parent for p in manifests if (p.parent / "src").is_dir() and "target" not in p.parts
    )
    bad = 0
    for c in crates:
        for p in check_crate(c):
            print(f"check-imports: {c.name}: modules import each other: {p}")
            bad += 1
    if bad:
        print(f"check-imports: {bad} import circle(s); give the shared piece its own module")
        return 1
    print(f"check-imports: no import circles in {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
