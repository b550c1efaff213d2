// Not used to compile: `fedlearn contracts build` compiles with py-solc-x and writes a Hardhat-format
// build-info under artifacts/build-info, which Slither reads through this file's presence (scripts/slither.sh).
module.exports = {
  solidity: { version: "0.8.30", settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: "cancun" } },
  paths: { sources: "./src", artifacts: "./artifacts" },
};
