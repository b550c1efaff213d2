"""Compiles the contracts with py-solc-x and writes the committed artifacts and a Hardhat-format build-info.

The compiler is the `solc` pinned in contracts/package.json: solc-js from contracts/node_modules, or a native
`solc` of the same version. Sources, OpenZeppelin's included, go into the standard-JSON input with their
content, so the output depends on nothing but the files and the compiler version.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fedlearn.chain.artifacts import CONTRACT_NAMES, artifacts_dir, contracts_dir
from fedlearn.errors import ChainError

# Matches `import "x";`, `import {A} from "x";`, `import * as A from "x";`.
_IMPORT = re.compile(r'^\s*import\s+(?:[^"\';]*?\s+from\s+)?["\']([^"\']+)["\']\s*;', re.MULTILINE)

EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200
BUILD_INFO_FORMAT = "hh-sol-build-info-1"


def pinned_solc_version(root: Path | None = None) -> str:
    """The exact `solc` version contracts/package.json pins."""
    package = json.loads(((root or contracts_dir()) / "package.json").read_text())
    deps = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
    version = deps.get("solc", "")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ChainError(f"contracts/package.json must pin solc exactly (found {version!r})")
    return version


def _source_unit(importer: str, path: str) -> str:
    """Resolves an import the way solc names source units: relative to the importer, else as written."""
    if path.startswith(("./", "../")):
        return posixpath.normpath(posixpath.join(posixpath.dirname(importer), path))
    return path


def collect_sources(root: Path) -> dict[str, str]:
    """Every source unit reachable from contracts/src, keyed by solc's source unit name."""
    search = [root, root / "node_modules"]
    pending = sorted(f"src/{p.relative_to(root / 'src').as_posix()}" for p in (root / "src").rglob("*.sol"))
    sources: dict[str, str] = {}
    while pending:
        unit = pending.pop()
        if unit in sources:
            continue
        for base in search:
            if (base / unit).is_file():
                sources[unit] = (base / unit).read_text()
                break
        else:
            raise ChainError(
                f"cannot find source {unit} (run scripts/setup-chain.sh to install contracts/node_modules)"
            )
        pending.extend(_source_unit(unit, imported) for imported in _IMPORT.findall(sources[unit]))
    return dict(sorted(sources.items()))


def standard_input(sources: dict[str, str]) -> dict[str, Any]:
    """The standard-JSON input: optimizer on, pinned EVM version, what the artifacts and Slither need."""
    return {
        "language": "Solidity",
        "sources": {unit: {"content": content} for unit, content in sources.items()},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "outputSelection": {
                "*": {
                    "*": [
                        "abi",
                        "metadata",
                        "devdoc",
                        "userdoc",
                        "evm.bytecode.object",
                        "evm.bytecode.sourceMap",
                        "evm.deployedBytecode.object",
                        "evm.deployedBytecode.sourceMap",
                        "evm.methodIdentifiers",
                    ],
                    "": ["ast"],
                }
            },
        },
    }


def _solcjs_wrapper(solcjs: Path, workdir: Path) -> Path:
    """A `solc` stand-in for py-solc-x: runs solc-js and drops the SMT notice it prints before the JSON."""
    wrapper = workdir / "solc"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys, tempfile\n"
        # node reads a pipe with EAGAIN at times and exits before flushing one past 64 KiB; files do neither.
        "with tempfile.TemporaryFile('w+') as inp, tempfile.TemporaryFile('w+') as out:\n"
        "    inp.write(sys.stdin.read()); inp.seek(0)\n"
        f"    p = subprocess.run([{str(solcjs)!r}, *sys.argv[1:]], stdin=inp, stdout=out)\n"
        "    out.seek(0)\n"
        "    sys.stdout.write(''.join(l for l in out if not l.startswith('>>> ')))\n"
        "sys.exit(p.returncode)\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def _native_solc_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    match = re.search(r"Version: (\d+\.\d+\.\d+)", out)
    return match.group(1) if match else None


def find_solc(root: Path, workdir: Path, solc: str | None = None) -> tuple[Path, str]:
    """The compiler to use and how to describe it: `solc` if given, else solc-js from npm, else a native solc."""
    version = pinned_solc_version(root)
    if solc is None:
        solcjs = root / "node_modules" / ".bin" / "solcjs"
        if solcjs.exists():
            return _solcjs_wrapper(solcjs, workdir), f"solc-js {version}"
        solc = shutil.which("solc")
        if solc is None:
            raise ChainError("no Solidity compiler: run scripts/setup-chain.sh (npm solc) or put solc on PATH")
    found = _native_solc_version(solc)
    if found is None:
        raise ChainError(f"solc at {solc} does not run, or does not say its version (`{solc} --version`)")
    if found != version:
        raise ChainError(f"solc at {solc} is version {found}, contracts/package.json pins {version}")
    return Path(solc), f"solc {version} ({solc})"


def compile_contracts(root: Path | None = None, solc: str | None = None) -> dict[str, Any]:
    """Compiles every source and returns the build-info (input and output) without writing anything."""
    import solcx
    from solcx.exceptions import SolcError

    root = root or contracts_dir()
    version = pinned_solc_version(root)
    sources = collect_sources(root)
    input_json = standard_input(sources)
    with tempfile.TemporaryDirectory() as tmp:
        binary, _ = find_solc(root, Path(tmp), solc)
        try:
            output = solcx.compile_standard(input_json, base_path=str(root), solc_binary=binary)
        except SolcError as exc:
            first = next((line for line in str(exc).splitlines() if "Error" in line), str(exc).splitlines()[0])
            raise ChainError(f"compilation failed: {first}") from None
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        message = errors[0].get("formattedMessage", errors[0]["message"])
        raise ChainError(f"compilation failed: {message.splitlines()[0]}")
    long_version = json.loads(next(iter(output["contracts"]["src/RewardDistributor.sol"].values()))["metadata"])
    return {
        "_format": BUILD_INFO_FORMAT,
        "id": hashlib.sha256(json.dumps(input_json, sort_keys=True).encode()).hexdigest()[:32],
        "solcVersion": version,
        "solcLongVersion": long_version["compiler"]["version"],
        "input": input_json,
        "output": output,
    }


def artifact_files(build_info: dict[str, Any]) -> dict[str, str]:
    """The files `contracts build` writes, relative to contracts/artifacts, with their exact text."""
    files: dict[str, str] = {}
    contracts = build_info["output"]["contracts"]
    for name in CONTRACT_NAMES:
        unit = f"src/{name}.sol"
        compiled = contracts[unit][name]
        artifact = {
            "contractName": name,
            "sourceName": unit,
            "solcVersion": build_info["solcLongVersion"],
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "metadata": compiled["metadata"],
            "buildInfo": f"build-info/{build_info['id']}.json",
        }
        files[f"{name}.json"] = json.dumps(artifact, indent=2, sort_keys=True) + "\n"
    files[f"build-info/{build_info['id']}.json"] = json.dumps(build_info, sort_keys=True, separators=(",", ":")) + "\n"
    return files


def write_artifacts(files: dict[str, str], out: Path | None = None) -> list[Path]:
    """Replaces the artifacts directory's JSON files (old build-info included) with `files`."""
    out = out or artifacts_dir()
    (out / "build-info").mkdir(parents=True, exist_ok=True)
    for old in (out / "build-info").glob("*.json"):
        if f"build-info/{old.name}" not in files:
            old.unlink()
    written = []
    for rel, text in files.items():
        path = out / rel
        path.write_text(text)
        written.append(path)
    return written


def build(root: Path | None = None, solc: str | None = None) -> list[Path]:
    """Compiles and writes the artifacts; returns the paths written."""
    return write_artifacts(artifact_files(compile_contracts(root, solc)), (root / "artifacts") if root else None)


if __name__ == "__main__":  # pragma: no cover - convenience for `python -m fedlearn.chain.build`
    for written in build():
        print(os.path.relpath(written))
