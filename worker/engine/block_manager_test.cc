// Block manager: allocation, reference counts, the prefix cache's chains,
// LRU eviction, and hash collisions resolved by comparing keys.
#include "worker/engine/block_manager.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace llorch {
namespace {

std::vector<int64_t> Keys(std::initializer_list<int32_t> ids, bool decode = false) {
  std::vector<int64_t> keys;
  for (int32_t id : ids) keys.push_back(PositionKey(id, decode));
  return keys;
}

TEST(BlockManagerTest, AllocatesEveryBlockOnceThenRunsDry) {
  BlockManager blocks(4, 16, /*prefix_cache=*/true);
  std::set<BlockId> seen;
  for (int i = 0; i < 4; ++i) {
    std::optional<BlockId> b = blocks.Allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_TRUE(seen.insert(*b).second);
    EXPECT_GE(*b, 0);
    EXPECT_LT(*b, 4);
  }
  EXPECT_FALSE(blocks.Allocate().has_value());
  EXPECT_EQ(blocks.num_used(), 4);
  EXPECT_EQ(blocks.num_available(), 0);
  blocks.Release(*seen.begin());
  EXPECT_EQ(blocks.num_free(), 1);
  EXPECT_EQ(blocks.Allocate(), *seen.begin());
}

TEST(BlockManagerTest, BlocksForRoundsUp) {
  BlockManager blocks(8, 16, true);
  EXPECT_EQ(blocks.BlocksFor(0), 0);
  EXPECT_EQ(blocks.BlocksFor(1), 1);
  EXPECT_EQ(blocks.BlocksFor(16), 1);
  EXPECT_EQ(blocks.BlocksFor(17), 2);
}

TEST(BlockManagerTest, SharedBlockIsFreedByItsLastReference) {
  BlockManager blocks(2, 4, /*prefix_cache=*/false);
  BlockId b = *blocks.Allocate();
  blocks.Retain(b);
  blocks.Release(b);
  EXPECT_EQ(blocks.num_used(), 1);
  blocks.Release(b);
  EXPECT_EQ(blocks.num_used(), 0);
  EXPECT_EQ(blocks.num_free(), 2);
  EXPECT_EQ(blocks.num_cached(), 0);
}

TEST(BlockManagerTest, RegisteredBlocksAreFoundByTheirChain) {
  BlockManager blocks(8, 2, true);
  const std::vector<int64_t> seq = Keys({1, 2, 3, 4, 5});
  BlockId b0 = *blocks.Allocate(), b1 = *blocks.Allocate();
  BlockManager::ChainLink link = blocks.Root();
  link = blocks.Register(b0, link, absl::MakeConstSpan(seq).subspan(0, 2));
  link = blocks.Register(b1, link, absl::MakeConstSpan(seq).subspan(2, 2));

  // Another sequence with the same start maps both blocks (whole blocks only).
  BlockManager::Match m = blocks.Lookup(Keys({1, 2, 3, 4, 9}), 10);
  EXPECT_EQ(m.blocks, (std::vector<BlockId>{b0, b1}));
  EXPECT_EQ(m.end.hash, link.hash);
  EXPECT_EQ(m.end.content, link.content);
  // `max_blocks` caps the match (a prompt keeps its last token to compute).
  BlockManager::Match capped = blocks.Lookup(Keys({1, 2, 3, 4}), 1);
  EXPECT_EQ(capped.blocks, (std::vector<BlockId>{b0}));
  // A different first block matches nothing, even with the same second one.
  EXPECT_TRUE(blocks.Lookup(Keys({7, 2, 3, 4}), 10).blocks.empty());
  // The same tokens computed as generated rows are other content.
  EXPECT_TRUE(blocks.Lookup(Keys({1, 2}, /*decode=*/true), 10).blocks.empty());
  for (BlockId b : m.blocks) blocks.Release(b);
  for (BlockId b : capped.blocks) blocks.Release(b);
  EXPECT_EQ(blocks.num_used(), 2);
}

TEST(BlockManagerTest, ReleasedBlocksStayCachedUntilNeededLeastRecentlyUsedFirst) {
  BlockManager blocks(3, 1, true);
  BlockId a = *blocks.Allocate(), b = *blocks.Allocate(), c = *blocks.Allocate();
  blocks.Register(a, blocks.Root(), Keys({10}));
  blocks.Register(b, blocks.Root(), Keys({20}));
  blocks.Release(a);  // cached first: evicted first
  blocks.Release(b);
  blocks.Release(c);  // unregistered: free
  EXPECT_EQ(blocks.num_free(), 1);
  EXPECT_EQ(blocks.num_cached(), 2);
  EXPECT_EQ(blocks.Allocate(), c);  // free blocks go before cached ones
  EXPECT_EQ(blocks.Allocate(), a);  // then the least recently used
  EXPECT_TRUE(blocks.Lookup(Keys({10}), 1).blocks.empty());
  BlockManager::Match hit = blocks.Lookup(Keys({20}), 1);
  EXPECT_EQ(hit.blocks, (std::vector<BlockId>{b}));
  EXPECT_EQ(blocks.num_cached(), 0);  // in use again
  EXPECT_FALSE(blocks.Allocate().has_value());
}

TEST(BlockManagerTest, DuplicateContentContinuesTheFirstChain) {
  BlockManager blocks(4, 1, true);
  BlockId first = *blocks.Allocate(), second = *blocks.Allocate();
  BlockManager::ChainLink l1 = blocks.Register(first, blocks.Root(), Keys({5}));
  BlockManager::ChainLink l2 = blocks.Register(second, blocks.Root(), Keys({5}));
  EXPECT_EQ(l1.content, l2.content);
  blocks.Release(second);  // not registered: free at once
  EXPECT_EQ(blocks.num_free(), 3);
  // A child registered after the duplicate is found through the first block.
  BlockId child = *blocks.Allocate();
  blocks.Register(child, l2, Keys({6}));
  EXPECT_EQ(blocks.Lookup(Keys({5, 6}), 2).blocks, (std::vector<BlockId>{first, child}));
}

uint64_t CollidingHash(uint64_t, absl::Span<const int64_t>) { return 42; }

TEST(BlockManagerTest, HashCollisionsAreResolvedByKeysAndParent) {
  BlockManager blocks(8, 2, true, &CollidingHash);
  BlockId a = *blocks.Allocate(), b = *blocks.Allocate(), c = *blocks.Allocate();
  BlockManager::ChainLink la = blocks.Register(a, blocks.Root(), Keys({1, 2}));
  blocks.Register(b, blocks.Root(), Keys({3, 4}));
  blocks.Register(c, la, Keys({3, 4}));  // same keys as b, other parent
  EXPECT_EQ(blocks.Lookup(Keys({3, 4}), 4).blocks, (std::vector<BlockId>{b}));
  EXPECT_EQ(blocks.Lookup(Keys({1, 2, 3, 4}), 4).blocks, (std::vector<BlockId>{a, c}));
  EXPECT_TRUE(blocks.Lookup(Keys({1, 3}), 4).blocks.empty());
}

TEST(BlockManagerTest, EvictedParentHidesItsChildren) {
  BlockManager blocks(2, 1, true);
  BlockId parent = *blocks.Allocate(), child = *blocks.Allocate();
  BlockManager::ChainLink lp = blocks.Register(parent, blocks.Root(), Keys({1}));
  blocks.Register(child, lp, Keys({2}));
  blocks.Release(parent);
  blocks.Release(child);
  BlockId reused = *blocks.Allocate();  // evicts the parent (least recent)
  EXPECT_EQ(reused, parent);
  // Same keys registered again in the reused block: new content, so the old
  // child (whose parent content is gone) is not matched behind it.
  blocks.Register(reused, blocks.Root(), Keys({1}));
  EXPECT_EQ(blocks.Lookup(Keys({1, 2}), 2).blocks, (std::vector<BlockId>{reused}));
}

TEST(BlockManagerTest, WithoutPrefixCacheNothingIsKept) {
  BlockManager blocks(2, 1, /*prefix_cache=*/false);
  BlockId a = *blocks.Allocate();
  blocks.Register(a, blocks.Root(), Keys({1}));
  blocks.Release(a);
  EXPECT_EQ(blocks.num_cached(), 0);
  EXPECT_EQ(blocks.num_free(), 2);
  EXPECT_TRUE(blocks.Lookup(Keys({1}), 1).blocks.empty());
  EXPECT_TRUE(blocks.RegisteredHashes().empty());
}

// A view rebuilt from the events alone: hash -> count.
void Apply(const std::vector<BlockManager::HashEvent>& events, std::multiset<uint64_t>* view) {
  for (const BlockManager::HashEvent& e : events) {
    if (e.delta > 0) {
      view->insert(e.hash);
    } else {
      auto it = view->find(e.hash);
      ASSERT_NE(it, view->end()) << "a hash forgotten that was never registered";
      view->erase(it);
    }
  }
}

std::multiset<uint64_t> Registered(const BlockManager& blocks) {
  const std::vector<uint64_t> hashes = blocks.RegisteredHashes();
  return std::multiset<uint64_t>(hashes.begin(), hashes.end());
}

// Placement's view follows the events: after registrations, duplicates
// (not registered twice), collisions (two blocks, one hash) and evictions,
// applying the events gives RegisteredHashes() exactly.
TEST(BlockManagerTest, HashEventsFollowRegistrationsAndEvictions) {
  BlockManager blocks(3, 1, true, [](uint64_t, absl::Span<const int64_t>) -> uint64_t {
    return 42;  // every block collides
  });
  std::vector<BlockManager::HashEvent> events;
  std::multiset<uint64_t> view;
  EXPECT_TRUE(blocks.TakeHashEvents(&events));
  EXPECT_TRUE(events.empty());
  BlockId a = *blocks.Allocate(), b = *blocks.Allocate(), c = *blocks.Allocate();
  blocks.Register(a, blocks.Root(), Keys({1}));
  blocks.Register(b, blocks.Root(), Keys({2}));  // same hash, other keys: both registered
  blocks.Register(c, blocks.Root(), Keys({1}));  // the same content as a: not registered
  ASSERT_TRUE(blocks.TakeHashEvents(&events));
  EXPECT_EQ(events.size(), 2u);
  Apply(events, &view);
  EXPECT_EQ(view, Registered(blocks));
  EXPECT_EQ(view.count(42), 2u);
  for (BlockId id : {a, b, c}) blocks.Release(id);
  BlockId d = *blocks.Allocate(), e = *blocks.Allocate(), f = *blocks.Allocate();  // evicts a, b
  (void)d, (void)e, (void)f;
  ASSERT_TRUE(blocks.TakeHashEvents(&events));
  Apply(events, &view);
  EXPECT_EQ(view, Registered(blocks));
  EXPECT_TRUE(view.empty());
}

// More changes between two reads than the buffer holds: TakeHashEvents says
// so (the reader rebuilds from RegisteredHashes), and nothing is allocated.
TEST(BlockManagerTest, HashEventsReportOverflow) {
  BlockManager blocks(2, 1, true);
  std::vector<BlockManager::HashEvent> events;
  for (int round = 0; round < 4; ++round) {  // 2 registrations and 2 evictions a round
    BlockId a = *blocks.Allocate(), b = *blocks.Allocate();
    blocks.Register(a, blocks.Root(), Keys({10 * round + 1}));
    blocks.Register(b, blocks.Root(), Keys({10 * round + 2}));
    blocks.Release(a);
    blocks.Release(b);
  }
  EXPECT_FALSE(blocks.TakeHashEvents(&events));
  EXPECT_TRUE(blocks.TakeHashEvents(&events));  // nothing since
  EXPECT_TRUE(events.empty());
}

TEST(BlockManagerTest, ChainHashIsFixedAndOrderSensitive) {
  const std::vector<int64_t> k12 = Keys({1, 2}), k21 = Keys({2, 1});
  EXPECT_EQ(ChainHash(7, k12), ChainHash(7, k12));
  EXPECT_NE(ChainHash(7, k12), ChainHash(7, k21));
  EXPECT_NE(ChainHash(7, k12), ChainHash(8, k12));
}

}  // namespace
}  // namespace llorch
