// Reads a deployment's payouts off the node with ethers.js, from event and function signatures written out here by
// hand from the Solidity sources (not from fedlearn's artifacts or web3.py), and checks a published payout tree with
// @openzeppelin/merkle-tree: a second reading of the chain, to compare with what fedlearn says it paid.
//
//   node read_chain.js < {"rpc", "distributor", "tree", "accounts": [...], "updates": [{"round", "hash"}, ...]}
//
// Prints JSON: every RoundSettled event, the claimable round and root, the tree's root and each account's leaf
// (verified against the tree's root), per account what the distributor says it claimed, its Claimed events, its
// Staked events and its token balance, every SlashProposed event, and the slash evidence each given update would
// carry, computed here from the rule the contracts' users are told (sha256 of the domain, the chain's round as 32
// bytes and the update's 32-byte hash). Amounts are decimal strings (wei).
const fs = require("fs");
const { ethers } = require("ethers");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

const DISTRIBUTOR = [
  "event RoundSettled(uint256 indexed round, bytes32 indexed modelHash, bytes32 rewardsRoot, uint256 roundTotal, uint256 leavesTotal, uint256 readyAt)",
  "event Claimed(address indexed account, uint256 amount, uint256 cumulativeAmount)",
  "event Staked(address indexed account, uint256 amount)",
  "event SlashProposed(uint256 indexed id, address indexed account, uint256 amount, bytes32 indexed evidenceHash, uint256 executableAt)",
  "function token() view returns (address)",
  "function claimableRound() view returns (uint64)",
  "function rewardsRoot() view returns (bytes32)",
  "function claimed(address account) view returns (uint256)",
];
const TOKEN = ["function balanceOf(address account) view returns (uint256)"];

const EVIDENCE_DOMAIN = "fedlearn/slash-evidence/v1";

function evidenceOf(round, updateHash) {
  return ethers.sha256(ethers.concat([ethers.toUtf8Bytes(EVIDENCE_DOMAIN), ethers.zeroPadValue(ethers.toBeHex(round), 32),
                                      updateHash]));
}

async function main() {
  const input = JSON.parse(fs.readFileSync(0, "utf8"));
  const { rpc, distributor: distributorAddress, tree: treeFile, accounts, updates } = input;
  const provider = new ethers.JsonRpcProvider(rpc, undefined, { staticNetwork: true });
  const distributor = new ethers.Contract(distributorAddress, DISTRIBUTOR, provider);
  const token = new ethers.Contract(await distributor.token(), TOKEN, provider);
  const settled = await distributor.queryFilter(distributor.filters.RoundSettled(), 0, "latest");
  const rounds = settled.map((e) => ({
    round: Number(e.args.round),
    modelHash: e.args.modelHash,
    rewardsRoot: e.args.rewardsRoot,
    roundTotal: e.args.roundTotal.toString(),
    leavesTotal: e.args.leavesTotal.toString(),
  }));
  const tree = StandardMerkleTree.load(JSON.parse(fs.readFileSync(treeFile, "utf8")));
  const leaves = {};
  for (const [i, [address, amount]] of tree.entries()) {
    const proof = tree.getProof(i);
    if (!StandardMerkleTree.verify(tree.root, ["address", "uint256"], [address, amount], proof)) {
      throw new Error(`leaf of ${address} does not verify against the tree's root`);
    }
    leaves[ethers.getAddress(address)] = amount.toString();
  }
  const perAccount = {};
  for (const account of accounts) {
    const claims = await distributor.queryFilter(distributor.filters.Claimed(account), 0, "latest");
    const stakes = await distributor.queryFilter(distributor.filters.Staked(account), 0, "latest");
    perAccount[ethers.getAddress(account)] = {
      claimed: (await distributor.claimed(account)).toString(),
      claimedEvents: claims.map((e) => e.args.amount.toString()),
      staked: stakes.map((e) => e.args.amount.toString()),
      balance: (await token.balanceOf(account)).toString(),
    };
  }
  const proposed = await distributor.queryFilter(distributor.filters.SlashProposed(), 0, "latest");
  process.stdout.write(JSON.stringify({
    rounds,
    slashProposals: proposed.map((e) => ({
      account: e.args.account,
      amount: e.args.amount.toString(),
      evidenceHash: e.args.evidenceHash,
    })),
    evidence: (updates || []).map((u) => evidenceOf(u.round, u.hash)),
    claimableRound: Number(await distributor.claimableRound()),
    rewardsRoot: await distributor.rewardsRoot(),
    treeRoot: tree.root,
    leaves,
    accounts: perAccount,
  }));
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
