/* probe/kvm-probe.h: the KVM probe split into start and finish, so the
 * doctor can make its other checks while the probe process runs, and a test
 * can replace what the probe process does (to prove the hard timeout). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmhost/doctor.h"

/* What the probe process reports through its pipe, once per step, so the
 * parent knows how far it got even if it is killed. */
enum probe_kvm_stage {
        PROBE_KVM_STAGE_OPEN,
        PROBE_KVM_STAGE_API,
        PROBE_KVM_STAGE_ARCH,
        PROBE_KVM_STAGE_CREATE_VM,
        PROBE_KVM_STAGE_MEMORY,
        PROBE_KVM_STAGE_CREATE_VCPU,
        PROBE_KVM_STAGE_MMAP_RUN,
        PROBE_KVM_STAGE_REGISTERS,
        PROBE_KVM_STAGE_TIMER,
        PROBE_KVM_STAGE_RUN,
        PROBE_KVM_STAGE_EXIT,       /* the guest stopped for an unexpected reason */
        PROBE_KVM_STAGE_GET_REGS,
        PROBE_KVM_STAGE_DONE,
};

struct probe_kvm_report {
        uint32_t magic;
        int32_t stage;        /* enum probe_kvm_stage reached (or failed at) */
        int32_t error;        /* positive errno of the failed step, 0 if none */
        int32_t api_version;
        uint32_t exit_reason; /* KVM_EXIT_* of the last exit */
        uint64_t exit_detail; /* hardware entry failure reason or internal-error suberror */
        uint64_t rip, rcx;
        uint8_t ran, finished;
        double seconds;       /* time in KVM_RUN */
        double elapsed;       /* since the probe started, stamped on each report */
};

/* The probe process body: fills 'report' and calls 'emit' after each step. */
typedef void (*probe_kvm_child_func)(const struct probe_kvm_options *opts,
                                    struct probe_kvm_report *report,
                                    void (*emit)(const struct probe_kvm_report *report));

struct probe_kvm_job {
        struct probe_kvm_options opts;  /* with the defaults filled in */
        pid_t pid;
        int fd;
        uint64_t start_ns;
        bool done;                           /* decided without a process */
        struct probe_kvm_result result;
};

/* Starts the probe ('child' NULL: the real one). On success the job must be
 * finished with probe_kvm_finish, which reaps the process. */
int probe_kvm_start(const struct probe_kvm_options *opts, probe_kvm_child_func child,
                         struct probe_kvm_job *job, struct vh_error *err);
int probe_kvm_finish(struct probe_kvm_job *job, struct probe_kvm_result *ret_result,
                          struct vh_error *err);

/* Turns the last report of the probe process into a verdict. Pure. */
void probe_kvm_judge(const struct probe_kvm_options *opts, const struct probe_kvm_report *report,
                          bool have_report, bool killed, int death_signal,
                          struct probe_kvm_result *r);

