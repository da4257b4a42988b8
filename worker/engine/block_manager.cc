#include "worker/engine/block_manager.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace llorch {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t ChainHash(uint64_t parent_hash, absl::Span<const int64_t> block_keys) {
  uint64_t h = SplitMix64(parent_hash ^ static_cast<uint64_t>(block_keys.size()));
  for (int64_t key : block_keys) h = SplitMix64(h ^ static_cast<uint64_t>(key));
  return h;
}

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, bool prefix_cache,
                           HashFn hash)
    : block_size_(block_size),
      prefix_cache_(prefix_cache),
      hash_(hash),
      root_hash_(SplitMix64(0x6c6c6f7263ULL)),  // "llorc"
      blocks_(num_blocks) {
  free_.reserve(num_blocks);
  // Handed out from the back: block 0 first.
  for (BlockId b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
  if (prefix_cache_) {
    keys_.resize(static_cast<size_t>(num_blocks) * block_size);
    by_hash_.reserve(num_blocks);
    events_.reserve(2 * static_cast<size_t>(num_blocks));
  }
}

void BlockManager::RecordEvent(uint64_t hash, int32_t delta) {
  if (events_.size() == events_.capacity()) {
    events_dropped_ = true;  // never grows: the reader rebuilds instead
    return;
  }
  events_.push_back(HashEvent{hash, delta});
}

bool BlockManager::TakeHashEvents(std::vector<HashEvent>* out) {
  out->clear();
  std::swap(*out, events_);
  if (events_.capacity() < out->capacity()) events_.reserve(out->capacity());
  const bool complete = !events_dropped_;
  events_dropped_ = false;
  return complete;
}

void BlockManager::LruPushBack(BlockId block) {
  Block& b = blocks_[block];
  b.lru_prev = lru_tail_;
  b.lru_next = kNone;
  (lru_tail_ == kNone ? lru_head_ : blocks_[lru_tail_].lru_next) = block;
  lru_tail_ = block;
  ++num_cached_;
}

void BlockManager::LruRemove(BlockId block) {
  Block& b = blocks_[block];
  (b.lru_prev == kNone ? lru_head_ : blocks_[b.lru_prev].lru_next) = b.lru_next;
  (b.lru_next == kNone ? lru_tail_ : blocks_[b.lru_next].lru_prev) = b.lru_prev;
  b.lru_prev = b.lru_next = kNone;
  --num_cached_;
}

std::optional<BlockId> BlockManager::Allocate() {
  BlockId block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (lru_head_ != kNone) {
    block = lru_head_;
    LruRemove(block);
    Forget(block);
  } else {
    return std::nullopt;
  }
  blocks_[block].refs = 1;
  ++num_used_;
  return block;
}

void BlockManager::Retain(BlockId block) {
  Block& b = blocks_[block];
  if (b.refs == 0) {  // a cached block comes back into use
    LruRemove(block);
    ++num_used_;
  }
  ++b.refs;
}

void BlockManager::Release(BlockId block) {
  Block& b = blocks_[block];
  assert(b.refs > 0);
  if (--b.refs > 0) return;
  --num_used_;
  if (b.content != 0) {
    LruPushBack(block);
  } else {
    free_.push_back(block);
  }
}

void BlockManager::Forget(BlockId block) {
  Block& b = blocks_[block];
  if (b.content == 0) return;
  auto head = by_hash_.find(b.hash);
  assert(head != by_hash_.end());
  if (head->second == block) {
    if (b.hash_next == kNone) {
      by_hash_.erase(head);
    } else {
      head->second = b.hash_next;
    }
  } else {
    BlockId prev = head->second;
    while (blocks_[prev].hash_next != block) prev = blocks_[prev].hash_next;
    blocks_[prev].hash_next = b.hash_next;
  }
  b.hash_next = kNone;
  b.content = 0;
  b.parent_content = 0;
  RecordEvent(b.hash, -1);
}

bool BlockManager::SameContent(BlockId block, uint64_t parent_content,
                               absl::Span<const int64_t> keys) {
  return blocks_[block].parent_content == parent_content &&
         absl::Span<const int64_t>(KeysOf(block)) == keys;
}

BlockManager::Match BlockManager::Lookup(absl::Span<const int64_t> keys, int32_t max_blocks) {
  Match match;
  match.end = Root();
  if (!prefix_cache_) return match;
  for (int64_t start = 0; start + block_size_ <= static_cast<int64_t>(keys.size()) &&
                          static_cast<int32_t>(match.blocks.size()) < max_blocks;
       start += block_size_) {
    absl::Span<const int64_t> block_keys = keys.subspan(start, block_size_);
    const uint64_t hash = hash_(match.end.hash, block_keys);
    auto head = by_hash_.find(hash);
    BlockId found = head == by_hash_.end() ? kNone : head->second;
    while (found != kNone && !SameContent(found, match.end.content, block_keys)) {
      found = blocks_[found].hash_next;
    }
    if (found == kNone) break;
    Retain(found);
    match.blocks.push_back(found);
    match.end = ChainLink{hash, blocks_[found].content};
  }
  return match;
}

BlockManager::ChainLink BlockManager::Register(BlockId block, ChainLink parent,
                                               absl::Span<const int64_t> block_keys) {
  const uint64_t hash = hash_(parent.hash, block_keys);
  if (!prefix_cache_) return ChainLink{hash, 0};
  auto [head, inserted] = by_hash_.try_emplace(hash, block);
  if (!inserted) {
    for (BlockId b = head->second; b != kNone; b = blocks_[b].hash_next) {
      if (SameContent(b, parent.content, block_keys)) {
        return ChainLink{hash, blocks_[b].content};  // computed before by another job
      }
    }
  }
  Block& b = blocks_[block];
  assert(b.refs > 0 && b.content == 0);
  if (!inserted) {  // a collision: chained behind the first block of this hash
    b.hash_next = head->second;
    head->second = block;
  }
  b.content = next_content_++;
  RecordEvent(hash, +1);
  b.parent_content = parent.content;
  b.hash = hash;
  std::copy(block_keys.begin(), block_keys.end(), KeysOf(block).begin());
  return ChainLink{hash, b.content};
}

std::vector<uint64_t> BlockManager::RegisteredHashes() const {
  std::vector<uint64_t> hashes;
  for (const auto& [hash, first] : by_hash_) {
    for (BlockId b = first; b != kNone; b = blocks_[b].hash_next) hashes.push_back(hash);
  }
  return hashes;
}

}  // namespace llorch
