"""What an artifacts folder holds and what can run it here, as lines of text (`python -m runtime info` prints them).

    lines = describe(manifest, folder, integrity_lines(manifest, folder)) + backend_lines()
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.artifacts.hashing import file_state
from runtime.artifacts.manifest import Manifest, belongs_to, verify_files_against
from runtime.backends import BACKENDS, installed_backends, runner_class
from runtime.errors import ArtifactError, BackendError


def describe(manifest: Manifest, folder: Path, integrity: Sequence[str] = ()) -> list[str]:
    """Lines describing a manifest: model, integrity (lines given), input, outputs, labels, verification."""
    inp, pre, src = manifest.input, manifest.input.preprocessing, manifest.source_model
    lo, hi = pre.value_range
    lines = [f"artifacts     {folder} (schema {manifest.schema_version}, created {manifest.created or 'unknown'})"]
    if src:
        lines.append(f"model         {src.get('name', '?')} from {src.get('file', '?')}, {src.get('params', '?')} "
                     f"parameters; ONNX opset {manifest.onnx.get('opset', '?')}")
    lines += [f"{'integrity' if i == 0 else '':14s}{line}" for i, line in enumerate(integrity)]
    raw = (f"raw {pre.raw_dtype} pixels * {pre.scale:.6g} + {pre.offset:g} -> [{lo:g}, {hi:g}]"
           if pre.raw_dtype == "uint8" and inp.dtype == "float32" else f"{pre.raw_dtype} values taken as given")
    free = f"; free size along {inp.free_axes}" if inp.free_axes else ""
    lines.append(f"input         {inp.name}: {inp.dtype} {_shape(inp.shape)} {inp.layout}; {raw}{free}")
    errors = _worst_errors(manifest.verification)
    rows = [[o.name, o.layer_class, _shape(o.shape), o.layout, o.role,
             f"max abs err {errors[o.name]:.2e}" if o.name in errors else ""] for o in manifest.outputs]
    lines.append("outputs")
    lines += ["  " + line for line in _table(rows)]
    labels = manifest.labels
    shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} labels)" if len(labels) > 20 else "")
    lines.append(f"labels        {shown or 'none'}")
    return lines + _verification_lines(manifest.verification)


def _verification_lines(v: dict) -> list[str]:
    if not v:
        return ["verification  none recorded"]
    try:
        tol = v.get("tolerance", {})
        lines = [(f"verification  {'passed' if v.get('passed') else 'FAILED'} on {v.get('images', '?')} images "
                  f"({v.get('source', '?')}) against {v.get('reference', '?')}, atol {tol.get('atol', '?')} "
                  f"rtol {tol.get('rtol', '?')}")]
        per_backend: dict[str, float] = {}
        for by_backend in v.get("outputs", {}).values():
            for backend, report in by_backend.items():
                per_backend[backend] = max(per_backend.get(backend, 0.0), report["max_abs"])
        if per_backend:
            lines.append("  max abs error " + ", ".join(f"{b} {e:.2e}" for b, e in per_backend.items()))
        worst = [(r["min_atol"], r["min_rtol"]) for by in v.get("outputs", {}).values() for r in by.values()
                 if "min_atol" in r]
        if worst:
            lines.append(f"  would pass with atol {max(a for a, _ in worst):.2g} "
                         f"or rtol {max(r for _, r in worst):.2g}")
        if v.get("within_noise_only"):
            lines.append(f"  within {tol.get('noise', 0):g}x their own float32 noise floor only (a chaotic model): "
                         + ", ".join(v["within_noise_only"]))
        if v.get("accuracy"):
            lines.append(f"  accuracy on {v.get('accuracy_images', v.get('images', '?'))} labelled images: "
                         + ", ".join(f"{b} {a:.4f}" for b, a in v["accuracy"].items()))
        lines += [f"  problem: {p}" for p in v.get("problems", [])]
        return lines
    except (AttributeError, KeyError, TypeError, ValueError):  # the report is informative only
        return ["verification  report present but not in the expected form"]


def _worst_errors(v: dict) -> dict[str, float]:
    """Output name -> largest max abs error over the verified backends."""
    try:
        return {name: max(r["max_abs"] for r in by_backend.values())
                for name, by_backend in v.get("outputs", {}).items() if by_backend}
    except (AttributeError, KeyError, TypeError, ValueError):
        return {}


@dataclass
class _FileGroup:
    """The listed artifact files under some path prefixes, and what was found of them on disk."""

    label: str
    prefixes: tuple[str, ...]
    files: list[str]  # listed paths under the prefixes
    missing: list[str]
    wrong: list[str]  # present, but not of the recorded size or sha256

    @property
    def unlisted(self) -> list[str]:
        return [p for p in self.prefixes if not any(belongs_to(rel, p) for rel in self.files)]

    @property
    def intact(self) -> bool:
        return bool(self.files) and not (self.unlisted or self.missing or self.wrong)

    def line(self) -> str:
        if self.unlisted:
            return f"{self.label}: the manifest lists no sha256 for {self.unlisted}: cannot check"
        what = ", ".join(self._what(p) for p in self.prefixes)
        if len(self.missing) == len(self.files):
            return f"{self.label}: {what} absent"
        if self.missing:
            return (f"{self.label}: {what} incomplete, {len(self.missing)} of {len(self.files)} files missing "
                    f"(e.g. {self.missing[0]!r})")
        if self.wrong:
            return f"{self.label}: {what} tampered with or truncated (e.g. {self.wrong[0]!r})"
        return f"{self.label}: {what} {'matches its' if len(self.files) == 1 else 'match their'} sha256"

    def _what(self, prefix: str) -> str:
        count = sum(belongs_to(rel, prefix) for rel in self.files)
        return prefix if count == 1 and prefix in self.files else f"{prefix}/ ({count} files)"


def integrity_lines(manifest: Manifest, folder: Path, backend: str | None = None) -> list[str]:
    """One line per backend, and one for the other listed files: do they match the manifest's sha256?

    With `backend`, only that backend's files are hashed, as `load` does (no other framework is
    imported), and they must be intact. Without it, every backend's files are checked: absent
    files are reported (an ONNX-only deployment ships manifest.json and model.onnx alone), but a
    present file with the wrong sha256 is an error, and so is a folder that no backend can load.

    Raises:
        ArtifactError: no or malformed 'files' in the manifest; a file present but tampered with or
            truncated; `backend`'s files absent or unlisted; without `backend`, no backend's files complete.
    """
    verify_files_against(manifest, folder, only=[])  # hashes nothing: checks that the manifest lists files
    lines: dict[str, str | _FileGroup] = {}  # label -> its line, or its files
    for name in [backend] if backend else BACKENDS:
        try:
            prefixes = tuple(runner_class(name).files)
        except (BackendError, OSError):  # a diagnostic listing: backend_lines, below, says why
            lines[name] = f"{name}: not checked (backend not usable here)"
            continue
        lines[name] = group = _file_group(manifest, folder, name, prefixes)
        if backend and not group.intact:
            verify_files_against(manifest, folder, only=list(prefixes))  # raises load's own message
    owned = [p for g in lines.values() if isinstance(g, _FileGroup) for p in g.prefixes]
    others = [rel for rel in manifest.files if not any(belongs_to(rel, p) for p in owned)]
    if others and backend:
        why = f" (not loaded by backend {backend!r})" if owned else ""
        lines["other"] = f"other: {len(others)} files not checked{why}"
    elif others:
        lines["other"] = _file_group(manifest, folder, "other", tuple(dict.fromkeys(r.split("/")[0] for r in others)))
    groups = [g for g in lines.values() if isinstance(g, _FileGroup)]
    for group in groups:
        if group.wrong:  # a present file that differs is never a deployment choice
            verify_files_against(manifest, folder, only=group.wrong[:1])  # raises the tampering message
    backends = [g for g in groups if g.label != "other"]
    if backends and not any(g.intact for g in backends):
        raise ArtifactError(f"no backend can load {str(folder)!r}: " + "; ".join(g.line() for g in backends))
    return [g if isinstance(g, str) else g.line() for g in lines.values()]


def _file_group(manifest: Manifest, folder: Path, label: str, prefixes: tuple[str, ...]) -> _FileGroup:
    files = [rel for rel in manifest.files if any(belongs_to(rel, p) for p in prefixes)]
    missing, wrong = [], []
    for rel in files:  # confined first: nothing outside the folder is stat'ed (read_manifest checked the entries)
        state = file_state(folder, rel, manifest.files[rel])
        (missing if state == "missing" else wrong if state == "wrong" else []).append(rel)
    return _FileGroup(label, prefixes, files, missing, wrong)


def backend_lines(only: list[str] | None = None) -> list[str]:
    """One line per backend: installed or not, its framework version, the devices it can use here."""
    installed = installed_backends()
    lines = ["backends"]
    rows = []
    for name in only or BACKENDS:
        package = BACKENDS[name].package
        if name not in installed:
            rows.append([name, "not installed", f"needs the {package!r} package"])
            continue
        try:
            devices = runner_class(name).devices()
        except (BackendError, ImportError, OSError) as exc:  # a diagnostic listing: a broken framework is reported
            rows.append([name, "not usable", " ".join(str(exc).split())])
            continue
        version = getattr(sys.modules.get(package), "__version__", "?")
        rows.append([name, f"{package} {version}", "devices " + ", ".join(devices)])
    return lines + ["  " + line for line in _table(rows)]


def _shape(shape: Iterable) -> str:
    return "[" + ", ".join(("N" if i == 0 else "any") if d is None else str(d) for i, d in enumerate(shape)) + "]"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows), default=0))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]


__all__ = ["backend_lines", "describe", "integrity_lines"]
