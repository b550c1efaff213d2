"""The committed artifacts are what the pinned compiler makes of the sources today."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fedlearn.chain import build
from fedlearn.chain.artifacts import CONTRACT_NAMES, artifacts_dir, contracts_dir, load_artifact
from fedlearn.errors import ChainError
from tests.tools import missing_tool


def _compiler_available() -> bool:
    if (contracts_dir() / "node_modules" / ".bin" / "solcjs").exists():
        return True
    native = shutil.which("solc")
    return native is not None and build._native_solc_version(native) == build.pinned_solc_version()


def test_solc_is_pinned_exactly() -> None:
    assert build.pinned_solc_version() == "0.8.30"


def test_committed_artifacts_are_not_stale() -> None:
    if not _compiler_available():
        missing_tool("the pinned solc", "run scripts/setup-chain.sh")
    fresh = build.artifact_files(build.compile_contracts())
    committed = {
        p.relative_to(artifacts_dir()).as_posix(): p.read_text() for p in artifacts_dir().rglob("*.json")
    }
    assert sorted(fresh) == sorted(committed), "artifact files differ: run `fedlearn contracts build`"
    for name, text in fresh.items():
        assert committed[name] == text, f"contracts/artifacts/{name} is stale: run `fedlearn contracts build`"


def test_build_info_is_hardhat_format_for_slither() -> None:
    (info_path,) = (artifacts_dir() / "build-info").glob("*.json")
    info = json.loads(info_path.read_text())
    assert info["_format"] == "hh-sol-build-info-1"
    assert info["solcVersion"] == build.pinned_solc_version()
    assert "src/RewardDistributor.sol" in info["input"]["sources"]
    assert "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol" in info["input"]["sources"]
    assert all("ast" in s for s in info["output"]["sources"].values())
    assert (contracts_dir() / "hardhat.config.js").exists()


def test_artifacts_hold_abi_and_bytecode() -> None:
    for name in CONTRACT_NAMES:
        art = load_artifact(name)
        # Creation code sets the free memory pointer: PUSH1 0x80, or PUSH2 when many immutables (EIP-712) come first.
        assert re.match(r"0x(60[0-9a-f]{2}|61[0-9a-f]{4})604052", art.bytecode)
        assert len(art.deployed_bytecode) > 1000
        assert any(item.get("type") == "error" for item in art.abi) or name == "ContributionToken"


def test_imports_resolve_relative_to_importer() -> None:
    assert build._source_unit("@openzeppelin/contracts/token/ERC20/ERC20.sol", "./IERC20.sol") == (
        "@openzeppelin/contracts/token/ERC20/IERC20.sol"
    )
    assert build._source_unit("@openzeppelin/contracts/token/ERC20/ERC20.sol", "../../utils/Context.sol") == (
        "@openzeppelin/contracts/utils/Context.sol"
    )
    assert build._source_unit("src/A.sol", "@openzeppelin/contracts/x.sol") == "@openzeppelin/contracts/x.sol"


def test_missing_source_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "A.sol").write_text('import {B} from "@nowhere/B.sol";\ncontract A {}\n')
    with pytest.raises(ChainError, match="cannot find source @nowhere/B.sol"):
        build.collect_sources(tmp_path)


def test_unpinned_solc_is_refused(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"devDependencies": {"solc": "^0.8.30"}}))
    with pytest.raises(ChainError, match="pin solc exactly"):
        build.pinned_solc_version(tmp_path)


def test_wrong_native_solc_version_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "solc"
    fake.write_text("#!/bin/sh\necho 'solc, the solidity compiler\nVersion: 0.8.1+commit.df193b15.Linux.g++'\n")
    fake.chmod(0o755)
    with pytest.raises(ChainError, match="is version 0.8.1, contracts/package.json pins 0.8.30"):
        build.find_solc(contracts_dir(), tmp_path, str(fake))
