// Who owns which KV block. The worker's KV memory is a pool of fixed-size
// blocks (KvPool holds the tensors); a job holds a block table and grows it
// block by block. Blocks are reference-counted so that jobs whose sequences
// start alike share their full blocks, and a full block whose content is
// registered outlives its jobs in a prefix cache (least recently used first
// out) until a fresh block is needed. No tensors, no threads: the engine's
// thread owns it; policy (who runs, who is preempted) lives in the engine.
//
// A block's content is identified by a chain: its position keys (token id
// and how its row was computed, see PositionKey) and the content before it.
// Lookups go by a 64-bit hash of the chain, deterministic across processes
// (the scheduler may compare workers' hashes), and are confirmed by
// comparing the keys and the parent's content id, so a hash collision can
// never map the wrong keys and values.
#ifndef LLORCH_WORKER_ENGINE_BLOCK_MANAGER_H_
#define LLORCH_WORKER_ENGINE_BLOCK_MANAGER_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"

namespace llorch {

using BlockId = int32_t;

// One position of a sequence as the cache sees it: the token id, and whether
// its row was computed as a generated token (one-token attention order) or as
// a prompt row. The same token computed both ways has different keys and
// values to the last bit, so the two never share a block.
inline int64_t PositionKey(int32_t token_id, bool decode_row) {
  return (static_cast<int64_t>(token_id) << 1) | (decode_row ? 1 : 0);
}

// A 64-bit hash of a block's keys following `parent_hash` (splitmix64 steps:
// fixed, so workers agree on it).
uint64_t ChainHash(uint64_t parent_hash, absl::Span<const int64_t> block_keys);

class BlockManager {
 public:
  using HashFn = uint64_t (*)(uint64_t parent_hash, absl::Span<const int64_t> block_keys);
  // `hash`: ChainHash; tests pass a colliding one.
  BlockManager(int32_t num_blocks, int32_t block_size, bool prefix_cache,
               HashFn hash = &ChainHash);

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  int32_t block_size() const { return block_size_; }
  bool prefix_cache() const { return prefix_cache_; }
  int32_t num_used() const { return num_used_; }     // referenced by a job
  int32_t num_cached() const { return num_cached_; }  // kept for reuse
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  // What Allocate can still hand out: free blocks, then cached ones.
  int32_t num_available() const { return num_free() + num_cached(); }
  // Blocks that `num_positions` positions take.
  int32_t BlocksFor(int64_t num_positions) const {
    return static_cast<int32_t>((num_positions + block_size_ - 1) / block_size_);
  }

  // A block to write (one reference): a free one, else the least recently
  // used cached block, whose content is forgotten. nullopt when every block
  // is referenced.
  std::optional<BlockId> Allocate();
  // Adds a reference to a block that already has one.
  void Retain(BlockId block);
  // Drops a reference. At zero a block with registered content is cached
  // (most recently used); any other block is free.
  void Release(BlockId block);

  // The content a chain continues from: the start of a sequence, or a
  // registered block's.
  struct ChainLink {
    uint64_t hash = 0;
    uint64_t content = 0;  // 0: the start of a sequence
  };
  ChainLink Root() const { return ChainLink{root_hash_, 0}; }

  // The longest run of registered full blocks that starts `keys` (whole
  // blocks only, at most `max_blocks`). Each returned block gains a reference;
  // `end` is the link the sequence continues from.
  struct Match {
    std::vector<BlockId> blocks;
    ChainLink end;
  };
  Match Lookup(absl::Span<const int64_t> keys, int32_t max_blocks);

  // Records that `block` (referenced, full) holds `block_keys` following
  // `parent`. Returns the link that follows it: the block's own content, or
  // that of an identical block registered before (the new block then stays
  // unregistered and is freed when released). No-op without the prefix cache.
  ChainLink Register(BlockId block, ChainLink parent, absl::Span<const int64_t> block_keys);

  // The hashes of every registered block (cached or in use), for placement.
  std::vector<uint64_t> RegisteredHashes() const;

  // A block's hash registered (+1) or forgotten (-1): what a view of the
  // registered hashes kept on another thread (placement's) needs to follow,
  // in O(changes) rather than O(registered blocks) per step.
  struct HashEvent {
    uint64_t hash;
    int32_t delta;
  };
  // Moves the events since the last call into `out` (cleared first; its
  // capacity is reused). Returns false when more happened than the buffer
  // holds (twice the blocks) and some were dropped: the caller then rebuilds
  // its view from RegisteredHashes().
  bool TakeHashEvents(std::vector<HashEvent>* out);

 private:
  static constexpr BlockId kNone = -1;
  struct Block {
    int32_t refs = 0;
    uint64_t content = 0;  // registered content id, 0: none
    uint64_t parent_content = 0;
    uint64_t hash = 0;
    BlockId hash_next = kNone;  // the next registered block with the same hash
    BlockId lru_prev = kNone, lru_next = kNone;  // while cached
  };
  // Everything is sized at construction: registering, caching and evicting
  // blocks allocate nothing, so the worker's heap stays flat under load.
  absl::Span<int64_t> KeysOf(BlockId block) {
    return absl::MakeSpan(keys_).subspan(static_cast<size_t>(block) * block_size_, block_size_);
  }
  bool SameContent(BlockId block, uint64_t parent_content, absl::Span<const int64_t> keys);
  void Forget(BlockId block);  // drops its registration
  void LruPushBack(BlockId block);
  void LruRemove(BlockId block);

  const int32_t block_size_;
  const bool prefix_cache_;
  const HashFn hash_;
  const uint64_t root_hash_;
  std::vector<Block> blocks_;
  std::vector<int64_t> keys_;  // [num_blocks, block_size]: each registered block's keys
  std::vector<BlockId> free_;  // LIFO: recently touched pages are reused first
  BlockId lru_head_ = kNone, lru_tail_ = kNone;  // cached blocks, least recently used first
  int32_t num_cached_ = 0;
  absl::flat_hash_map<uint64_t, BlockId> by_hash_;  // first block of each hash's chain
  int32_t num_used_ = 0;
  uint64_t next_content_ = 1;
  std::vector<HashEvent> events_;  // since TakeHashEvents; capacity reserved
  bool events_dropped_ = false;
  void RecordEvent(uint64_t hash, int32_t delta);
};

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_BLOCK_MANAGER_H_
