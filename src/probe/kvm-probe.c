/* probe/kvm-probe.c: does KVM really run guest code here, and how fast?
 *
 * A /dev/kvm that opens and answers KVM_GET_API_VERSION can still be unable
 * to run a normal guest: a paravirtual KVM that traps every instruction runs
 * about a million instructions per second, where a stock kernel never
 * finishes booting. So the probe runs a small real-mode loop through the KVM
 * API and measures it:
 *
 *     0x1000: 66 B9 imm32   mov ecx, N
 *     0x1006: 66 49         dec ecx        <- 2 instructions per iteration
 *     0x1008: 75 FC         jnz 0x1006
 *     0x100A: F4            hlt
 *
 * The guest runs in a child process, so a hang or crash inside KVM cannot
 * take vmhost down. Inside the child a SIGALRM (installed without
 * SA_RESTART, and setting kvm_run->immediate_exit so a signal that lands
 * just before KVM_RUN is not lost) stops the guest after the budget; ecx
 * then says how many iterations ran. The parent kills the child after a
 * hard timeout whatever it is doing. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "probe/probe-parse.h"
#include "probe/kvm-probe.h"

#define REPORT_MAGIC 0x4b564d50u /* "KVMP" */

#define GUEST_MEMORY_SIZE 0x10000u
#define GUEST_CODE_ADDR 0x1000u
/* Where KVM keeps the real-mode TSS on Intel CPUs without "unrestricted
 * guest"; above guest memory, the address QEMU uses. */
#define GUEST_TSS_ADDR 0xfffbd000ul
/* Re-arm interval of the budget timer: if one SIGALRM is lost in a race,
 * the next one still stops the guest. */
#define TIMER_REPEAT_MS 50u

/* Longest cache file we read. */
#define CACHE_MAX 8192

const char *probe_accel_to_string(enum probe_accel a) {
        switch (a) {
        case PROBE_ACCEL_KVM: return "kvm";
        case PROBE_ACCEL_TCG: return "tcg";
        case PROBE_ACCEL_NONE: break;
        }
        return "none";
}

const char *probe_kvm_status_to_string(enum probe_kvm_status s) {
        switch (s) {
        case PROBE_KVM_USABLE: return "usable";
        case PROBE_KVM_MISSING: return "missing";
        case PROBE_KVM_NO_ACCESS: return "no-access";
        case PROBE_KVM_UNUSABLE: break;
        }
        return "unusable";
}

static enum probe_kvm_status kvm_status_from_string(const char *s, bool *ok) {
        static const enum probe_kvm_status all[] = {
                PROBE_KVM_USABLE, PROBE_KVM_MISSING, PROBE_KVM_NO_ACCESS, PROBE_KVM_UNUSABLE,
        };
        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                if (streq(s, probe_kvm_status_to_string(all[i]))) {
                        *ok = true;
                        return all[i];
                }
        *ok = false;
        return PROBE_KVM_UNUSABLE;
}

static void options_fill(const struct probe_kvm_options *in, struct probe_kvm_options *out) {
        *out = in ? *in : (struct probe_kvm_options) {};
        if (!out->device)
                out->device = PROBE_KVM_DEVICE;
        if (!out->iterations)
                out->iterations = PROBE_KVM_ITERATIONS;
        if (!out->budget_ms)
                out->budget_ms = PROBE_KVM_BUDGET_MS;
        if (!out->hard_timeout_ms)
                out->hard_timeout_ms = PROBE_KVM_HARD_TIMEOUT_MS;
        if (!(out->min_ips > 0))
                out->min_ips = PROBE_KVM_MIN_IPS;
}

static void result_init(struct probe_kvm_result *r, const struct probe_kvm_options *opts) {
        *r = (struct probe_kvm_result) {
                .status = PROBE_KVM_UNUSABLE,
                .api_version = -1,
                .iterations_target = opts->iterations,
        };
}

void probe_kvm_classify(struct probe_kvm_result *r, double min_ips) {
        char rate[32], need[32];
        if (!(min_ips > 0))
                min_ips = PROBE_KVM_MIN_IPS;
        r->instructions_per_second = r->seconds > 0 ? 2.0 * (double) r->iterations / r->seconds : 0;
        probe_format_rate(r->instructions_per_second, rate, sizeof(rate));
        probe_format_rate(min_ips, need, sizeof(need));

        if (r->iterations == 0 && !r->finished) {
                r->status = PROBE_KVM_UNUSABLE;
                snprintf(r->reason, sizeof(r->reason),
                         "KVM entered the probe guest but it ran no loop iteration in %.0f ms", r->seconds * 1e3);
                return;
        }
        if (r->instructions_per_second < min_ips) {
                r->status = PROBE_KVM_UNUSABLE;
                snprintf(r->reason, sizeof(r->reason),
                         "KVM runs guest code at %s instructions/s, below the %s/s needed; a stock kernel would not boot",
                         rate, need);
                return;
        }
        if (!r->finished) {
                /* Fast while it ran, yet stopped: stalls, not speed, are the problem. */
                r->status = PROBE_KVM_UNUSABLE;
                snprintf(r->reason, sizeof(r->reason),
                         "KVM ran %" PRIu64 " of %" PRIu64 " probe iterations (%s instructions/s) but did not finish within %.0f ms",
                         r->iterations, r->iterations_target, rate, r->seconds * 1e3);
                return;
        }
        r->status = PROBE_KVM_USABLE;
        snprintf(r->reason, sizeof(r->reason), "KVM ran the probe guest at %s instructions/s", rate);
}

enum probe_accel probe_kvm_accel(const struct probe_kvm_result *r, bool qemu_has_tcg) {
        if (r && r->status == PROBE_KVM_USABLE)
                return PROBE_ACCEL_KVM;
        return qemu_has_tcg ? PROBE_ACCEL_TCG : PROBE_ACCEL_NONE;
}

/* ---- the probe process ---- */

static volatile sig_atomic_t probe_alarm;
static struct kvm_run *volatile probe_run;

static void probe_alarm_handler(int sig) {
        probe_alarm = 1;
        /* KVM checks this on entry: a signal that arrives between our check
         * of 'probe_alarm' and the ioctl still makes KVM_RUN return. */
        if (probe_run)
                probe_run->immediate_exit = 1;
}

static int probe_step_failed(struct probe_kvm_report *report, enum probe_kvm_stage stage, int error,
                             void (*emit)(const struct probe_kvm_report *)) {
        report->stage = stage;
        report->error = error > 0 ? error : EIO;
        emit(report);
        return -report->error;
}

static void probe_child(const struct probe_kvm_options *opts, struct probe_kvm_report *report,
                        void (*emit)(const struct probe_kvm_report *)) {
        report->stage = PROBE_KVM_STAGE_OPEN;
        emit(report);
        int kvm = open(opts->device, O_RDWR | O_CLOEXEC);
        if (kvm < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_OPEN, errno, emit);
                return;
        }

        report->stage = PROBE_KVM_STAGE_API;
        emit(report);
        int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
        if (api < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_API, errno, emit);
                return;
        }
        report->api_version = api;
        if (api != PROBE_KVM_API_VERSION) {
                probe_step_failed(report, PROBE_KVM_STAGE_API, EPROTO, emit);
                return;
        }

#if defined(__x86_64__) || defined(__i386__)
        report->stage = PROBE_KVM_STAGE_CREATE_VM;
        emit(report);
        int vm = ioctl(kvm, KVM_CREATE_VM, 0);
        if (vm < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_CREATE_VM, errno, emit);
                return;
        }
        /* Needed for real mode on Intel CPUs without unrestricted guest;
         * elsewhere it is accepted and unused, so its result does not matter. */
        (void) ioctl(vm, KVM_SET_TSS_ADDR, GUEST_TSS_ADDR);

        report->stage = PROBE_KVM_STAGE_MEMORY;
        emit(report);
        uint8_t *mem = mmap(NULL, GUEST_MEMORY_SIZE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) {
                probe_step_failed(report, PROBE_KVM_STAGE_MEMORY, errno, emit);
                return;
        }
        const uint32_t n = opts->iterations;
        const uint8_t code[] = {
                0x66, 0xb9, (uint8_t) n, (uint8_t) (n >> 8), (uint8_t) (n >> 16), (uint8_t) (n >> 24),
                0x66, 0x49,
                0x75, 0xfc,
                0xf4,
        };
        /* Touching every page now keeps page faults out of the timing. */
        memset(mem, 0xf4, GUEST_MEMORY_SIZE);
        memcpy(mem + GUEST_CODE_ADDR, code, sizeof(code));
        struct kvm_userspace_memory_region region = {
                .slot = 0,
                .guest_phys_addr = 0,
                .memory_size = GUEST_MEMORY_SIZE,
                .userspace_addr = (uint64_t) (uintptr_t) mem,
        };
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_MEMORY, errno, emit);
                return;
        }

        report->stage = PROBE_KVM_STAGE_CREATE_VCPU;
        emit(report);
        int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
        if (vcpu < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_CREATE_VCPU, errno, emit);
                return;
        }

        report->stage = PROBE_KVM_STAGE_MMAP_RUN;
        emit(report);
        int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        if (run_size < (int) sizeof(struct kvm_run)) {
                probe_step_failed(report, PROBE_KVM_STAGE_MMAP_RUN, run_size < 0 ? errno : EPROTO, emit);
                return;
        }
        struct kvm_run *run = mmap(NULL, (size_t) run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
        if (run == MAP_FAILED) {
                probe_step_failed(report, PROBE_KVM_STAGE_MMAP_RUN, errno, emit);
                return;
        }

        report->stage = PROBE_KVM_STAGE_REGISTERS;
        emit(report);
        struct kvm_sregs sregs;
        if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_REGISTERS, errno, emit);
                return;
        }
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_REGISTERS, errno, emit);
                return;
        }
        /* ecx starts at N as well, so a guest stopped before its first
         * instruction reads as 0 iterations, not N. */
        struct kvm_regs regs = {
                .rip = GUEST_CODE_ADDR,
                .rflags = 0x2,
                .rcx = n,
                .rsp = GUEST_MEMORY_SIZE - 16,
        };
        if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_REGISTERS, errno, emit);
                return;
        }

        report->stage = PROBE_KVM_STAGE_TIMER;
        emit(report);
        struct sigaction sa = { .sa_handler = probe_alarm_handler };
        sigemptyset(&sa.sa_mask);
        /* No SA_RESTART: KVM_RUN must come back with EINTR. */
        sa.sa_flags = 0;
        if (sigaction(SIGALRM, &sa, NULL) < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_TIMER, errno, emit);
                return;
        }
        sigset_t alrm;
        sigemptyset(&alrm);
        sigaddset(&alrm, SIGALRM);
        sigprocmask(SIG_UNBLOCK, &alrm, NULL);
        probe_run = run;
        struct itimerval budget = {
                .it_value = { .tv_sec = opts->budget_ms / 1000, .tv_usec = (opts->budget_ms % 1000) * 1000 },
                .it_interval = { .tv_sec = 0, .tv_usec = TIMER_REPEAT_MS * 1000 },
        };
        if (setitimer(ITIMER_REAL, &budget, NULL) < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_TIMER, errno, emit);
                return;
        }

        report->stage = PROBE_KVM_STAGE_RUN;
        report->ran = 1;
        emit(report);
        uint64_t t0 = vh_clock_ns();
        int run_error = 0;
        bool unexpected_exit = false;
        for (;;) {
                if (probe_alarm)
                        break;
                if (ioctl(vcpu, KVM_RUN, 0) < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue; /* the loop head decides */
                        run_error = errno;
                        break;
                }
                report->exit_reason = run->exit_reason;
                if (run->exit_reason == KVM_EXIT_HLT) {
                        report->finished = 1;
                        break;
                }
                if (run->exit_reason == KVM_EXIT_INTR)
                        continue;
                if (run->exit_reason == KVM_EXIT_FAIL_ENTRY)
                        report->exit_detail = run->fail_entry.hardware_entry_failure_reason;
                else if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
                        report->exit_detail = run->internal.suberror;
                unexpected_exit = true;
                break;
        }
        report->seconds = (double) (vh_clock_ns() - t0) / 1e9;
        struct itimerval off = {};
        setitimer(ITIMER_REAL, &off, NULL);
        probe_run = NULL;

        if (run_error) {
                probe_step_failed(report, PROBE_KVM_STAGE_RUN, run_error, emit);
                return;
        }

        if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0) {
                probe_step_failed(report, PROBE_KVM_STAGE_GET_REGS, errno, emit);
                return;
        }
        report->rip = regs.rip;
        report->rcx = regs.rcx;
        report->stage = unexpected_exit ? PROBE_KVM_STAGE_EXIT : PROBE_KVM_STAGE_DONE;
        emit(report);
#else
        probe_step_failed(report, PROBE_KVM_STAGE_ARCH, ENOTSUP, emit);
#endif
}

/* The write end of the report pipe in the probe process, and when the
 * probe started (before the fork). */
static int probe_report_fd = -1;
static uint64_t probe_start_ns;

static void probe_emit(const struct probe_kvm_report *report) {
        /* The parent may collect the reports late (it makes other checks
         * meanwhile), so the probe's own duration travels with them. */
        struct probe_kvm_report stamped = *report;
        stamped.elapsed = (double) (vh_clock_ns() - probe_start_ns) / 1e9;
        /* Smaller than PIPE_BUF, so each report arrives whole. */
        ssize_t k;
        do
                k = write(probe_report_fd, &stamped, sizeof(stamped));
        while (k < 0 && errno == EINTR);
}

int probe_kvm_start(const struct probe_kvm_options *opts, probe_kvm_child_func child,
                         struct probe_kvm_job *job, struct vh_error *err) {
        *job = (struct probe_kvm_job) { .pid = -1, .fd = -1 };
        options_fill(opts, &job->opts);
        result_init(&job->result, &job->opts);
        job->start_ns = vh_clock_ns();

        struct stat st;
        if (stat(job->opts.device, &st) < 0) {
                int e = errno;
                job->done = true;
                job->result.probe_seconds = (double) (vh_clock_ns() - job->start_ns) / 1e9;
                if (e == ENOENT) {
                        job->result.status = PROBE_KVM_MISSING;
                        snprintf(job->result.reason, sizeof(job->result.reason),
                                 "no %s: no KVM driver serves this CPU; load kvm_intel or kvm_amd, "
                                 "or enable hardware virtualization", job->opts.device);
                } else {
                        job->result.status = e == EACCES ? PROBE_KVM_NO_ACCESS : PROBE_KVM_UNUSABLE;
                        snprintf(job->result.reason, sizeof(job->result.reason), "cannot stat %s: %s",
                                 job->opts.device, strerror(e));
                }
                return 0;
        }
        job->result.present = true;

        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0)
                return vh_error_set(err, negative_errno(), "Cannot create a pipe for the KVM probe: %s",
                                    strerror(errno));
        pid_t pid = fork();
        if (pid < 0) {
                int r = negative_errno();
                close(fds[0]);
                close(fds[1]);
                return vh_error_set(err, r, "Cannot start the KVM probe process: %s", strerror(-r));
        }
        if (pid == 0) {
                /* This process never execs, so all of it is "between fork
                 * and exec": a parent with threads may have left a lock
                 * (malloc's, stdio's) held. Only system calls and
                 * async-signal-safe functions from here on: the probe uses
                 * open, ioctl, mmap, memset, sigaction, setitimer,
                 * clock_gettime and write, and formats nothing; the report
                 * is a fixed struct the parent turns into text. */
                close(fds[0]);
                /* Nothing of the parent's but the report pipe: O_CLOEXEC
                 * does not help a child that never execs, and a probe stuck
                 * in the kernel must not keep a VM's or the home's lock, or
                 * another thread's pipe, open. */
                if (fds[1] > 3)
                        (void) syscall(SYS_close_range, 3u, (unsigned) fds[1] - 1, 0u);
                (void) syscall(SYS_close_range, (unsigned) fds[1] + 1, ~0u, 0u);
                /* Die with the parent, so a probe can never outlive vmhost. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                signal(SIGPIPE, SIG_DFL);
                probe_report_fd = fds[1];
                probe_start_ns = job->start_ns;
                struct probe_kvm_report report = { .magic = REPORT_MAGIC, .api_version = -1 };
                (child ? child : probe_child)(&job->opts, &report, probe_emit);
                _exit(0);
        }
        close(fds[1]);
        job->pid = pid;
        job->fd = fds[0];
        return 0;
}

static const char *stage_to_string(enum probe_kvm_stage s) {
        switch (s) {
        case PROBE_KVM_STAGE_OPEN: return "open";
        case PROBE_KVM_STAGE_API: return "KVM_GET_API_VERSION";
        case PROBE_KVM_STAGE_ARCH: return "architecture check";
        case PROBE_KVM_STAGE_CREATE_VM: return "KVM_CREATE_VM";
        case PROBE_KVM_STAGE_MEMORY: return "KVM_SET_USER_MEMORY_REGION";
        case PROBE_KVM_STAGE_CREATE_VCPU: return "KVM_CREATE_VCPU";
        case PROBE_KVM_STAGE_MMAP_RUN: return "mmap of kvm_run";
        case PROBE_KVM_STAGE_REGISTERS: return "setting the registers";
        case PROBE_KVM_STAGE_TIMER: return "arming the timer";
        case PROBE_KVM_STAGE_RUN: return "KVM_RUN";
        case PROBE_KVM_STAGE_EXIT: return "guest exit";
        case PROBE_KVM_STAGE_GET_REGS: return "KVM_GET_REGS";
        case PROBE_KVM_STAGE_DONE: return "done";
        }
        return "unknown step";
}

static const char *exit_reason_to_string(uint32_t reason) {
        switch (reason) {
        case KVM_EXIT_UNKNOWN: return "unknown";
        case KVM_EXIT_EXCEPTION: return "exception";
        case KVM_EXIT_IO: return "port I/O";
        case KVM_EXIT_MMIO: return "MMIO";
        case KVM_EXIT_SHUTDOWN: return "shutdown (triple fault)";
        case KVM_EXIT_FAIL_ENTRY: return "entry failed";
        case KVM_EXIT_INTERNAL_ERROR: return "internal error";
        }
        return "other";
}

void probe_kvm_judge(const struct probe_kvm_options *opts, const struct probe_kvm_report *rep,
                          bool have_report, bool killed, int death_signal,
                          struct probe_kvm_result *r) {
        char *reason = r->reason;
        size_t rsize = sizeof(r->reason);

        r->killed = killed;
        r->status = PROBE_KVM_UNUSABLE;
        if (!have_report) {
                if (killed)
                        snprintf(reason, rsize, "the KVM probe process did not start within %u ms; killed it",
                                 opts->hard_timeout_ms);
                else
                        snprintf(reason, rsize, "the KVM probe process ended without a report (signal %d)",
                                 death_signal);
                return;
        }

        enum probe_kvm_stage stage = (enum probe_kvm_stage) rep->stage;
        r->openable = stage > PROBE_KVM_STAGE_OPEN;
        r->api_version = rep->api_version;
        r->ran = rep->ran;
        r->finished = rep->finished;
        r->seconds = rep->seconds;

        if (killed) {
                if (stage == PROBE_KVM_STAGE_RUN)
                        snprintf(reason, rsize,
                                 "KVM_RUN did not return within %u ms even when interrupted; killed the probe",
                                 opts->hard_timeout_ms);
                else
                        snprintf(reason, rsize, "%s did not return within %u ms; killed the probe",
                                 stage_to_string(stage), opts->hard_timeout_ms);
                return;
        }
        if (death_signal > 0 && stage != PROBE_KVM_STAGE_DONE && stage != PROBE_KVM_STAGE_EXIT && !rep->error) {
                snprintf(reason, rsize, "the KVM probe process died with signal %d (%s) during %s",
                         death_signal, strsignal(death_signal), stage_to_string(stage));
                return;
        }
        if (rep->error) {
                if (stage == PROBE_KVM_STAGE_OPEN) {
                        if (rep->error == EACCES || rep->error == EPERM) {
                                r->status = PROBE_KVM_NO_ACCESS;
                                snprintf(reason, rsize,
                                         "cannot open %s read-write: %s (add the user to group 'kvm')",
                                         opts->device, strerror(rep->error));
                        } else if (rep->error == ENXIO || rep->error == ENODEV) {
                                snprintf(reason, rsize, "%s exists but no KVM driver answers it (%s)",
                                         opts->device, strerror(rep->error));
                        } else
                                snprintf(reason, rsize, "cannot open %s: %s", opts->device, strerror(rep->error));
                } else if (stage == PROBE_KVM_STAGE_API && rep->error == EPROTO)
                        snprintf(reason, rsize, "KVM API version %d, vmhost needs %d", rep->api_version,
                                 PROBE_KVM_API_VERSION);
                else if (stage == PROBE_KVM_STAGE_ARCH)
                        snprintf(reason, rsize, "the guest-run probe is written for x86 hosts only");
                else
                        snprintf(reason, rsize, "%s failed: %s", stage_to_string(stage), strerror(rep->error));
                return;
        }
        if (stage == PROBE_KVM_STAGE_EXIT) {
                snprintf(reason, rsize, "the probe guest stopped with KVM exit %u (%s, detail 0x%" PRIx64
                         ") at rip 0x%" PRIx64 " instead of halting", rep->exit_reason,
                         exit_reason_to_string(rep->exit_reason), rep->exit_detail, rep->rip);
                return;
        }
        if (stage != PROBE_KVM_STAGE_DONE) {
                snprintf(reason, rsize, "the KVM probe process stopped during %s", stage_to_string(stage));
                return;
        }

        uint64_t n = opts->iterations, ecx = rep->rcx & 0xffffffffu;
        if (ecx > n || (rep->finished && ecx != 0)) {
                snprintf(reason, rsize, "the probe guest ended with ecx=%" PRIu64 " (started at %" PRIu64
                         ", expected to count down to 0): KVM ran the code wrongly", ecx, n);
                return;
        }
        r->iterations = n - ecx;
        probe_kvm_classify(r, opts->min_ips);
}

int probe_kvm_finish(struct probe_kvm_job *job, struct probe_kvm_result *ret_result,
                          struct vh_error *err) {
        if (job->done) {
                *ret_result = job->result;
                return 0;
        }

        struct probe_kvm_report last = {}, cur;
        size_t have = 0;
        bool got = false, killed = false;
        uint64_t deadline = job->start_ns + (uint64_t) job->opts.hard_timeout_ms * 1000000ull;

        for (;;) {
                /* Past the deadline we still take what the process already
                 * wrote: the caller may come late, after a probe that ended
                 * in time. Only a process with nothing more to say is killed. */
                uint64_t now = vh_clock_ns();
                struct pollfd pfd = { .fd = job->fd, .events = POLLIN };
                int timeout = now >= deadline ? 0 : (int) DIV_ROUND_UP(deadline - now, 1000000ull);
                int k = poll(&pfd, 1, timeout);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        killed = true;
                        break;
                }
                if (k == 0) {
                        if (vh_clock_ns() >= deadline) {
                                killed = true;
                                break;
                        }
                        continue;
                }
                ssize_t m = read(job->fd, (char *) &cur + have, sizeof(cur) - have);
                if (m < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        break;
                }
                if (m == 0)
                        break;
                have += (size_t) m;
                if (have == sizeof(cur)) {
                        if (cur.magic == REPORT_MAGIC) {
                                last = cur;
                                got = true;
                        }
                        have = 0;
                }
        }
        job->fd = safe_close(job->fd);

        if (killed)
                kill(job->pid, SIGKILL);
        /* Reap it; a process stuck in the kernel even after SIGKILL is left
         * behind rather than hanging vmhost. */
        int status = 0, death_signal = 0;
        uint64_t reap_deadline = vh_clock_ns() + 1000000000ull;
        for (;;) {
                pid_t w = waitpid(job->pid, &status, killed ? WNOHANG : 0);
                if (w == job->pid) {
                        if (WIFSIGNALED(status) && !killed)
                                death_signal = WTERMSIG(status);
                        break;
                }
                if (w < 0 && errno != EINTR)
                        break;
                if (w == 0) {
                        if (vh_clock_ns() >= reap_deadline)
                                break;
                        usleep(5000);
                }
        }
        job->pid = -1;

        probe_kvm_judge(&job->opts, &last, got, killed, death_signal, &job->result);
        /* A killed probe took as long as we waited; a finished one says. */
        job->result.probe_seconds = killed || !got ? (double) (vh_clock_ns() - job->start_ns) / 1e9 : last.elapsed;
        *ret_result = job->result;
        (void) err;
        return 0;
}

int probe_kvm_probe(const struct probe_kvm_options *opts, struct probe_kvm_result *ret_result,
                   struct vh_error *err) {
        struct probe_kvm_job job;
        int r = probe_kvm_start(opts, NULL, &job, err);
        if (r < 0)
                return r;
        return probe_kvm_finish(&job, ret_result, err);
}

/* ---- the per-boot cache ---- */

#define CACHE_HEADER "vmhost-kvm-probe 1"

int probe_kvm_cache_format(const struct probe_kvm_result *r, const char *boot_id, char **ret_text) {
        char reason[PROBE_KVM_REASON_MAX];
        snprintf(reason, sizeof(reason), "%s", r->reason);
        /* One line per key: a newline in the reason would end it early. */
        for (char *p = reason; *p; p++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        char *text = strdup_printf(
                CACHE_HEADER "\n"
                "boot-id=%s\n"
                "status=%s\n"
                "present=%d\n"
                "openable=%d\n"
                "api-version=%d\n"
                "ran=%d\n"
                "finished=%d\n"
                "killed=%d\n"
                "iterations=%" PRIu64 "\n"
                "iterations-target=%" PRIu64 "\n"
                "seconds=%.9f\n"
                "probe-seconds=%.9f\n"
                "reason=%s\n",
                boot_id, probe_kvm_status_to_string(r->status), r->present, r->openable, r->api_version,
                r->ran, r->finished, r->killed, r->iterations, r->iterations_target, r->seconds,
                r->probe_seconds, reason);
        if (!text)
                return -ENOMEM;
        *ret_text = text;
        return 0;
}

static int parse_flag(const char *v, bool *ret) {
        if (streq(v, "0") || streq(v, "1")) {
                *ret = v[0] == '1';
                return 0;
        }
        return -EINVAL;
}

static int parse_seconds(const char *v, double *ret) {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (errno || end == v || *end || !(d >= 0) || d > 3600)
                return -EINVAL;
        *ret = d;
        return 0;
}

int probe_kvm_cache_parse(const char *text, const char *boot_id, struct probe_kvm_result *ret_result) {
        if (!text || strlen(text) > CACHE_MAX)
                return -EINVAL;
        _cleanup_free_ char *copy = strdup(text);
        if (!copy)
                return -ENOMEM;

        struct probe_kvm_result r = { .api_version = -1 };
        bool header = false, boot_ok = false, status_ok = false;
        char *save = NULL;
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (!header) {
                        if (!streq(line, CACHE_HEADER))
                                return -EINVAL;
                        header = true;
                        continue;
                }
                char *eq = strchr(line, '=');
                if (!eq)
                        return -EINVAL;
                *eq = '\0';
                const char *k = line, *v = eq + 1;
                int q = 0;
                uint64_t u;
                long l;
                if (streq(k, "boot-id")) {
                        if (!streq(v, boot_id))
                                return -ESTALE;
                        boot_ok = true;
                } else if (streq(k, "status"))
                        r.status = kvm_status_from_string(v, &status_ok);
                else if (streq(k, "present"))
                        q = parse_flag(v, &r.present);
                else if (streq(k, "openable"))
                        q = parse_flag(v, &r.openable);
                else if (streq(k, "ran"))
                        q = parse_flag(v, &r.ran);
                else if (streq(k, "finished"))
                        q = parse_flag(v, &r.finished);
                else if (streq(k, "killed"))
                        q = parse_flag(v, &r.killed);
                else if (streq(k, "api-version")) {
                        q = parse_int_range(v, -1, 1000000, &l);
                        r.api_version = (int) l;
                } else if (streq(k, "iterations")) {
                        q = parse_u64(v, &u);
                        r.iterations = u;
                } else if (streq(k, "iterations-target")) {
                        q = parse_u64(v, &u);
                        r.iterations_target = u;
                } else if (streq(k, "seconds"))
                        q = parse_seconds(v, &r.seconds);
                else if (streq(k, "probe-seconds"))
                        q = parse_seconds(v, &r.probe_seconds);
                else if (streq(k, "reason"))
                        snprintf(r.reason, sizeof(r.reason), "%s", v);
                /* Unknown keys come from a newer vmhost: ignore them. */
                if (q < 0)
                        return -EINVAL;
        }
        if (!header || !boot_ok || !status_ok)
                return -EINVAL;
        r.instructions_per_second = r.seconds > 0 ? 2.0 * (double) r.iterations / r.seconds : 0;
        *ret_result = r;
        return 0;
}

static int read_boot_id(char **ret) {
        _cleanup_free_ char *id = NULL;
        int r = read_one_line_file("/proc/sys/kernel/random/boot_id", &id);
        if (r < 0)
                return r;
        if (isempty(id) || strlen(id) > 64)
                return -EINVAL;
        *ret = TAKE_PTR(id);
        return 0;
}

static int cache_path(const struct vh_context *ctx, char **ret) {
        _cleanup_free_ char *dir = NULL;
        int r = vh_runtime_subdir(ctx, NULL, &dir);
        if (r < 0)
                return r;
        char *p = strdup_printf("%s/kvm-probe", dir);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

int probe_kvm_cache_store(const struct vh_context *ctx, const struct probe_kvm_result *res, struct vh_error *err) {
        _cleanup_free_ char *boot_id = NULL, *path = NULL, *text = NULL;
        int r = read_boot_id(&boot_id);
        if (r < 0)
                return vh_error_set(err, r, "Cannot read the boot id: %s", strerror(-r));
        r = cache_path(ctx, &path);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create the runtime directory: %s", strerror(-r));
        r = probe_kvm_cache_format(res, boot_id, &text);
        if (r < 0)
                return vh_error_set(err, r, "Out of memory");
        r = write_file_atomic(path, text, strlen(text), 0644);
        if (r < 0)
                return vh_error_set(err, r, "Cannot write %s: %s", path, strerror(-r));
        return 0;
}

int probe_kvm_cached(const struct vh_context *ctx, struct probe_kvm_result *ret_result, bool *ret_from_cache,
                     struct vh_error *err) {
        _cleanup_free_ char *boot_id = NULL, *path = NULL, *text = NULL;
        if (read_boot_id(&boot_id) >= 0 && cache_path(ctx, &path) >= 0 &&
            read_full_file(path, CACHE_MAX, &text, NULL) >= 0) {
                struct probe_kvm_result cached;
                if (probe_kvm_cache_parse(text, boot_id, &cached) >= 0) {
                        *ret_result = cached;
                        if (ret_from_cache)
                                *ret_from_cache = true;
                        return 0;
                }
        }

        struct probe_kvm_result fresh;
        int r = probe_kvm_probe(NULL, &fresh, err);
        if (r < 0)
                return r;
        /* A cache we cannot write costs the next caller a probe, nothing more. */
        (void) probe_kvm_cache_store(ctx, &fresh, NULL);
        *ret_result = fresh;
        if (ret_from_cache)
                *ret_from_cache = false;
        return 0;
}
