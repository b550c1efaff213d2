// Builds @openzeppelin/merkle-tree's StandardMerkleTree of (address, uint256) values read as JSON on stdin and
// prints its root, every value's proof and its dump, for comparison with fedlearn.chain.merkle.
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const values = JSON.parse(input);
  const tree = StandardMerkleTree.of(values, ["address", "uint256"]);
  const proofs = values.map((v) => tree.getProof(v));
  process.stdout.write(JSON.stringify({ root: tree.root, proofs, dump: tree.dump() }));
});
