/* The hidden fraction of a timeline (optimized/core/timeline.h) on spans whose answer is
 * known: communication time is the union of blocking and async spans, exposed the part of
 * it in blocking calls and waits. */
#include <gtest/gtest.h>

#include "optimized/core/timeline.h"

namespace pb {

TEST(Timeline, BlockingCommunicationIsAllExposed) {
  const CommTime t = comm_time({{SpanKind::Compute, "f", 0, 10}, {SpanKind::Blocking, "ar", 2, 5},
                                {SpanKind::Blocking, "ag", 7, 8}});
  EXPECT_DOUBLE_EQ(t.total_ms, 4);
  EXPECT_DOUBLE_EQ(t.exposed_ms, 4);
  EXPECT_DOUBLE_EQ(t.hidden_fraction(), 0);
}

TEST(Timeline, AsyncCommunicationUnderComputeIsHiddenUpToTheWait) {
  // An all-reduce on the worker from 1 to 9 while the caller computes until 6, then waits
  // from 6 to 9: 3 of its 8 ms exposed.
  const CommTime t = comm_time({{SpanKind::Compute, "b", 0, 6}, {SpanKind::Async, "ar", 1, 9},
                                {SpanKind::Wait, "ar wait", 6, 9}});
  EXPECT_DOUBLE_EQ(t.total_ms, 8);
  EXPECT_DOUBLE_EQ(t.exposed_ms, 3);
  EXPECT_DOUBLE_EQ(t.hidden_fraction(), 5.0 / 8.0);
}

TEST(Timeline, OverlappingCallsCountOnce) {
  // Two async calls at once (2..6 and 4..8) and a blocking one inside them (5..7): 6 ms of
  // communication, 2 exposed; a wait with nothing in flight (9..10) exposes nothing.
  const CommTime t = comm_time({{SpanKind::Async, "a", 2, 6}, {SpanKind::Async, "b", 4, 8},
                                {SpanKind::Blocking, "c", 5, 7}, {SpanKind::Wait, "w", 9, 10}});
  EXPECT_DOUBLE_EQ(t.total_ms, 6);
  EXPECT_DOUBLE_EQ(t.exposed_ms, 2);
}

TEST(Timeline, NoCommunicationHidesNothing) {
  EXPECT_DOUBLE_EQ(comm_time({{SpanKind::Compute, "f", 0, 1}}).hidden_fraction(), 0);
  EXPECT_DOUBLE_EQ(comm_time({}).total_ms, 0);
}

TEST(Timeline, RecordsOnlyWhileOn) {
  Timeline& tl = Timeline::get();
  tl.enable(false);
  { const TimedSpan s(SpanKind::Compute, "off"); }
  EXPECT_TRUE(tl.take().empty());
  tl.enable(true);
  { const TimedSpan s(SpanKind::Blocking, "all_reduce", "dp"); }
  const auto spans = tl.take();
  tl.enable(false);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].name, "dp all_reduce");
  EXPECT_EQ(spans[0].kind, SpanKind::Blocking);
  EXPECT_LE(spans[0].start_ms, spans[0].end_ms);
}

}  // namespace pb
