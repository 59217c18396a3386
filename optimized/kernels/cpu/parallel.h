/* Threads of the CPU kernels: a fixed pool and a parallel loop over a fixed partition.
 *
 * Determinism: the caller splits its work into tasks by the shape alone (never by the
 * thread count), every task writes its own outputs, and a task's arithmetic does not depend
 * on which thread runs it; reductions across tasks go through per-task partials summed in
 * task order by one thread. A kernel's result is then bitwise the same for 1, 2 or N
 * threads (suites/unit/test_cpu_kernels.cc checks 1, 2 and 3).
 *
 * The pool belongs to the process (one rank): set_threads(n) sizes it, n - 1 workers plus
 * the calling thread. A parallel_for issued while the pool is busy (a worker stream's kernel
 * while the main thread's runs, or a nested call inside a task) runs its tasks inline, in
 * order: the same tasks, so the same bits. */
#pragma once

#include <cstdint>
#include <functional>

namespace pb::cpu {

void set_threads(int n);  // n >= 1; 1 stops the workers
int threads();

// fn(t) for t in [0, tasks), on up to threads() threads; returns when all have run.
// An exception from a task is rethrown here after every task has finished.
void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn);

// The fixed partition of n items into blocks of `grain` (the last one shorter):
// block t covers [t * grain, min(n, (t + 1) * grain)).
inline int64_t blocks_of(int64_t n, int64_t grain) { return n <= 0 ? 0 : (n + grain - 1) / grain; }

// parallel_for over the blocks of [0, n): fn(begin, end).
inline void parallel_blocks(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  parallel_for(blocks_of(n, grain), [&](int64_t t) {
    const int64_t b = t * grain;
    fn(b, b + grain < n ? b + grain : n);
  });
}

}  // namespace pb::cpu
