// The coordinator's KV pool and prefix cache (daemon/kv_pool.h), alone.
#include "daemon/kv_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace paged {
namespace {

using ::testing::ElementsAre;

std::vector<int32_t> Tokens(int n, int32_t base = 1) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(base + i);
  return t;
}

std::vector<PrefixKey> ChainOf(const KvPool& pool, const std::vector<int32_t>& tokens, int n) {
  std::vector<PrefixKey> chain;
  pool.ExtendChain(tokens, n, &chain);
  return chain;
}

TEST(KvPoolTest, AllocateAndReleaseWithoutCaching) {
  KvPool pool(4, 4, /*caching=*/false);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.Allocate(3, &a));
  EXPECT_THAT(a, ElementsAre(0, 1, 2));
  EXPECT_FALSE(pool.Allocate(2, &b)) << "all or nothing";
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.available(), 1);
  const auto t = Tokens(12);
  const auto chain = ChainOf(pool, t, 3);
  EXPECT_EQ(pool.Publish(a, t, chain, 0), 3u);
  EXPECT_EQ(pool.cached(), 0) << "caching off publishes nothing";
  pool.Release(&a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(pool.available(), 4);
  EXPECT_EQ(pool.referenced(), 0);
  ASSERT_TRUE(pool.Allocate(3, &b));
  EXPECT_THAT(b, ElementsAre(0, 1, 2)) << "released blocks come back in their order";
}

TEST(KvPoolTest, AdoptTakesTheNamedBlocksSharedOnesOnce) {
  KvPool pool(8, 4, /*caching=*/true);
  // Two restored sequences sharing block 5 (a cached prefix), one holding 2.
  const std::vector<std::vector<int32_t>> tables = {{5, 1}, {5, 6, 2}};
  EXPECT_FALSE(pool.Adopt(std::vector<std::vector<int32_t>>{{1, 1}}));    // a block twice
  EXPECT_FALSE(pool.Adopt(std::vector<std::vector<int32_t>>{{1}, {8}}));  // out of range
  EXPECT_EQ(pool.available(), 8);  // nothing taken by a refused adoption
  ASSERT_TRUE(pool.Adopt(tables));
  EXPECT_EQ(pool.refs(5), 2);
  EXPECT_EQ(pool.refs(1), 1);
  EXPECT_EQ(pool.available(), 4);
  // The others are handed out as before, none of the adopted.
  std::vector<int32_t> fresh;
  ASSERT_TRUE(pool.Allocate(4, &fresh));
  EXPECT_THAT(fresh, ElementsAre(0, 3, 4, 7));
  EXPECT_FALSE(pool.Allocate(1, &fresh));
  std::vector<int32_t> a = tables[0], b = tables[1];
  pool.Release(&a);
  EXPECT_EQ(pool.refs(5), 1);
  pool.Release(&b);
  pool.Release(&fresh);
  EXPECT_EQ(pool.available(), 8);
}

TEST(KvPoolTest, PublishedBlocksAreSharedByPrefixAndKeptAfterRelease) {
  KvPool pool(8, 4, /*caching=*/true);
  const auto t = Tokens(10);
  auto chain = ChainOf(pool, t, 2);  // two full blocks of 10 tokens
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.Allocate(3, &a));
  EXPECT_EQ(pool.Peek(t, chain).size(), 0u);
  pool.Publish(a, t, chain, 0);
  EXPECT_EQ(pool.cached(), 2);
  EXPECT_TRUE(pool.published(a[0]) && pool.published(a[1]) && !pool.published(a[2]));

  // Same first 8 tokens, a different tail: both blocks match.
  auto u = Tokens(8);
  u.push_back(500);
  auto uchain = ChainOf(pool, u, 2);
  EXPECT_EQ(pool.Peek(u, uchain).size(), 2u);
  std::vector<int32_t> b = pool.Acquire(u, uchain);
  EXPECT_THAT(b, ElementsAre(a[0], a[1]));
  EXPECT_EQ(pool.refs(a[0]), 2);

  // A's release keeps the shared blocks referenced by B; its private block
  // goes back to the free list.
  pool.Release(&a);
  EXPECT_EQ(pool.refs(b[0]), 1);
  EXPECT_EQ(pool.referenced(), 2);
  pool.Release(&b);
  EXPECT_EQ(pool.referenced(), 0);
  EXPECT_EQ(pool.available(), 8) << "cached, unreferenced blocks count as available";
  EXPECT_EQ(pool.cached(), 2) << "and stay cached until the pool needs them";
  EXPECT_EQ(pool.evictable(), 2);
  EXPECT_EQ(pool.Peek(t, chain).size(), 2u);
}

TEST(KvPoolTest, SameTokensAfterADifferentPrefixDoNotMatch) {
  KvPool pool(8, 4, /*caching=*/true);
  auto t = Tokens(8);
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.Allocate(2, &a));
  pool.Publish(a, t, ChainOf(pool, t, 2), 0);
  // Block 1 holds tokens 5..8 in both, but block 0 differs.
  auto u = t;
  u[0] = 77;
  EXPECT_EQ(pool.Peek(u, ChainOf(pool, u, 2)).size(), 0u);
  // A prefix of the published run matches as far as it goes.
  auto v = t;
  v[6] = 77;
  EXPECT_EQ(pool.Peek(v, ChainOf(pool, v, 2)).size(), 1u);
}

TEST(KvPoolTest, EvictsCachedBlocksOnlyWhenFreeOnesRunOutLeastRecentlyReleasedFirst) {
  KvPool pool(4, 2, /*caching=*/true);
  const auto t = Tokens(6);
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.Allocate(3, &a));  // blocks 0, 1, 2
  pool.Publish(a, t, ChainOf(pool, t, 3), 0);
  pool.Release(&a);  // released tail first: 2, then 1, then 0
  EXPECT_EQ(pool.evictable(), 3);
  std::vector<int32_t> b;
  ASSERT_TRUE(pool.Allocate(1, &b));
  EXPECT_THAT(b, ElementsAre(3)) << "the free block before any cached one";
  EXPECT_EQ(pool.evictions(), 0);
  ASSERT_TRUE(pool.Allocate(1, &b));
  EXPECT_EQ(b[1], 2) << "then the prompt's tail, released first";
  EXPECT_EQ(pool.evictions(), 1);
  EXPECT_EQ(pool.cached(), 2);
  EXPECT_EQ(pool.Peek(t, ChainOf(pool, t, 3)).size(), 2u) << "the head still matches";
  EXPECT_FALSE(pool.Allocate(3, &b));
  EXPECT_EQ(pool.cached(), 2) << "a failed allocation evicts nothing";
}

TEST(KvPoolTest, AKeyAlreadyPublishedLeavesTheTwinPrivate) {
  KvPool pool(8, 4, /*caching=*/true);
  const auto t = Tokens(4);
  const auto chain = ChainOf(pool, t, 1);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.Allocate(1, &a));
  ASSERT_TRUE(pool.Allocate(1, &b));
  pool.Publish(a, t, chain, 0);
  pool.Publish(b, t, chain, 0);  // computed the same prefix at the same time
  EXPECT_TRUE(pool.published(a[0]));
  EXPECT_FALSE(pool.published(b[0]));
  pool.Release(&b);
  EXPECT_EQ(pool.cached(), 1);
  EXPECT_EQ(pool.evictable(), 0) << "the twin went back to the free list";
}

TEST(KvPoolTest, KeysDifferAcrossPoolsSoCollisionsCannotBePlanned) {
  KvPool p1(1, 4, true), p2(1, 4, true);
  const auto t = Tokens(4);
  const auto a = ChainOf(p1, t, 1), b = ChainOf(p2, t, 1);
  EXPECT_FALSE(a[0] == b[0]) << "per-process random keys";
  EXPECT_TRUE(a[0] == ChainOf(p1, t, 1)[0]) << "stable within a pool";
}

}  // namespace
}  // namespace paged
