// Where a CPU step's time goes between OpenMP regions: an LD_PRELOAD library
// that wraps libgomp's GOMP_parallel (each at::parallel_for region) and
// counts, per region body, in time-stamp-counter cycles:
//   gap   the calling thread alone since the previous region ended (serial
//         work: tensor bookkeeping, activation rounding, sampling...),
//   wall  the region from fork to join,
//   busy  each thread's time inside the body (sum and the slowest thread):
//         wall - slowest is the fork/join cost, slowest - mean the imbalance.
// Cycles rather than seconds: shares of one run, steady on a noisy machine.
// Each thread's gaps are its own (loading and the engine's steps may run on
// different threads); the counts are summed over them.
//
// Env: OMP_REGIONS_SKIP (regions not counted at the start: loading and warm-up;
// default 0), OMP_REGIONS_REPORT (report after this many counted regions;
// default: at exit), OMP_REGIONS_OUT (file; default stderr), OMP_REGIONS_IDLE_MS
// (a gap longer than this is idle time, not serial work; default 20).
// Report lines: "region <object> <offset> calls gap wall busy_sum busy_max"
// (tools/profile-regions.sh names the bodies and prints the table).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

typedef void (*RegionFn)(void*);
typedef void (*GompParallel)(RegionFn, void*, unsigned, unsigned);

enum { kMaxRegions = 256, kMaxThreads = 256 };

typedef struct {
  void* fn;
  uint64_t calls, gap, wall, busy_sum, busy_max;
} RegionStats;

static RegionStats stats[kMaxRegions];
static int num_regions;
static uint64_t idle_cycles, counted, seen;
static int reported;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread uint64_t last_end;  // when this thread's last region ended

typedef struct {
  RegionFn fn;
  void* data;
  uint64_t busy[kMaxThreads];
} Call;

static void Trampoline(void* arg) {
  Call* call = arg;
  const uint64_t begin = __rdtsc();
  call->fn(call->data);
  const int thread = omp_get_thread_num();
  if (thread < kMaxThreads) call->busy[thread] = __rdtsc() - begin;
}

static uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* value = getenv(name);
  return value != NULL && *value != '\0' ? strtoull(value, NULL, 10) : fallback;
}

// Time-stamp-counter cycles per second, over 20 ms of sleep.
static double MeasureTscHz(void) {
  struct timespec begin, end, pause = {0, 20 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &begin);
  const uint64_t tsc_begin = __rdtsc();
  nanosleep(&pause, NULL);
  const uint64_t tsc_end = __rdtsc();
  clock_gettime(CLOCK_MONOTONIC, &end);
  const double seconds = (end.tv_sec - begin.tv_sec) + (end.tv_nsec - begin.tv_nsec) * 1e-9;
  return (tsc_end - tsc_begin) / seconds;
}

static double tsc_hz;

// Called with `lock` held, or at exit.
static void Report(void) {
  if (reported || counted == 0) return;
  reported = 1;
  const char* path = getenv("OMP_REGIONS_OUT");
  FILE* out = path != NULL && *path != '\0' ? fopen(path, "w") : stderr;
  if (out == NULL) out = stderr;
  fprintf(out, "tsc_hz %.0f\nthreads %d\ncounted %llu\nidle %llu\n", tsc_hz,
          omp_get_max_threads(), (unsigned long long)counted, (unsigned long long)idle_cycles);
  for (int i = 0; i < num_regions; ++i) {
    Dl_info info;
    const char* object = "?";
    uintptr_t offset = (uintptr_t)stats[i].fn;
    if (dladdr(stats[i].fn, &info) != 0 && info.dli_fname != NULL) {
      object = info.dli_fname;
      offset = (uintptr_t)stats[i].fn - (uintptr_t)info.dli_fbase;
    }
    fprintf(out, "region %s 0x%lx %llu %llu %llu %llu %llu\n", object, (unsigned long)offset,
            (unsigned long long)stats[i].calls, (unsigned long long)stats[i].gap,
            (unsigned long long)stats[i].wall, (unsigned long long)stats[i].busy_sum,
            (unsigned long long)stats[i].busy_max);
  }
  if (out != stderr) fclose(out);
}

__attribute__((destructor)) static void ReportAtExit(void) { Report(); }

// llorch's programs leave by _exit, skipping library destructors (libtorch's
// take seconds): report there too.
typedef void (*ExitFn)(int);
void _exit(int status) {
  pthread_mutex_lock(&lock);
  Report();
  pthread_mutex_unlock(&lock);
  ((ExitFn)dlsym(RTLD_NEXT, "_exit"))(status);
  __builtin_unreachable();
}

static RegionStats* StatsOf(void* fn) {
  for (int i = 0; i < num_regions; ++i) {
    if (stats[i].fn == fn) return &stats[i];
  }
  if (num_regions == kMaxRegions) return NULL;
  stats[num_regions].fn = fn;
  return &stats[num_regions++];
}

static GompParallel real;
static uint64_t skip, report_after, idle_limit;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void Init(void) {
  real = (GompParallel)dlsym(RTLD_NEXT, "GOMP_parallel");
  skip = EnvNumber("OMP_REGIONS_SKIP", 0);
  report_after = EnvNumber("OMP_REGIONS_REPORT", 0);
  tsc_hz = MeasureTscHz();
  idle_limit = (uint64_t)(EnvNumber("OMP_REGIONS_IDLE_MS", 20) * 1e-3 * tsc_hz);
}

void GOMP_parallel(RegionFn fn, void* data, unsigned num_threads, unsigned flags) {
  pthread_once(&init_once, Init);
  if (reported) {
    real(fn, data, num_threads, flags);
    return;
  }
  Call call;
  memset(&call, 0, sizeof call);
  call.fn = fn;
  call.data = data;
  const uint64_t begin = __rdtsc();
  real(Trampoline, &call, num_threads, flags);
  const uint64_t end = __rdtsc();
  pthread_mutex_lock(&lock);
  if (++seen > skip) {
    RegionStats* s = StatsOf((void*)fn);
    if (s != NULL) {
      const uint64_t gap = last_end != 0 ? begin - last_end : 0;
      if (gap > idle_limit) {
        idle_cycles += gap;
      } else {
        s->gap += gap;
      }
      uint64_t busy_max = 0;
      for (int t = 0; t < kMaxThreads; ++t) {
        s->busy_sum += call.busy[t];
        if (call.busy[t] > busy_max) busy_max = call.busy[t];
      }
      s->calls += 1;
      s->wall += end - begin;
      s->busy_max += busy_max;
      ++counted;
    }
    if (report_after != 0 && counted == report_after) Report();
  }
  pthread_mutex_unlock(&lock);
  last_end = end;
}
