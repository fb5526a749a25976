/* host/kvm-probe.h: the KVM probe split into start and finish, so the
 * doctor can make its other checks while the probe process runs, and a test
 * can replace what the probe process does (to prove the hard timeout). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmhost/doctor.h"

/* What the probe process reports through its pipe, once per step, so the
 * parent knows how far it got even if it is killed. */
enum host_kvm_stage {
        HOST_KVM_STAGE_OPEN,
        HOST_KVM_STAGE_API,
        HOST_KVM_STAGE_ARCH,
        HOST_KVM_STAGE_CREATE_VM,
        HOST_KVM_STAGE_MEMORY,
        HOST_KVM_STAGE_CREATE_VCPU,
        HOST_KVM_STAGE_MMAP_RUN,
        HOST_KVM_STAGE_REGISTERS,
        HOST_KVM_STAGE_TIMER,
        HOST_KVM_STAGE_RUN,
        HOST_KVM_STAGE_EXIT,       /* the guest stopped for an unexpected reason */
        HOST_KVM_STAGE_GET_REGS,
        HOST_KVM_STAGE_DONE,
};

struct host_kvm_report {
        uint32_t magic;
        int32_t stage;        /* enum host_kvm_stage reached (or failed at) */
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
typedef void (*host_kvm_child_func)(const struct host_kvm_probe_options *opts,
                                    struct host_kvm_report *report,
                                    void (*emit)(const struct host_kvm_report *report));

struct host_kvm_probe_job {
        struct host_kvm_probe_options opts;  /* with the defaults filled in */
        pid_t pid;
        int fd;
        uint64_t start_ns;
        bool done;                           /* decided without a process */
        struct host_kvm_probe_result result;
};

/* Starts the probe ('child' NULL: the real one). On success the job must be
 * finished with host_kvm_probe_finish, which reaps the process. */
int host_kvm_probe_start(const struct host_kvm_probe_options *opts, host_kvm_child_func child,
                         struct host_kvm_probe_job *job, struct vh_error *err);
int host_kvm_probe_finish(struct host_kvm_probe_job *job, struct host_kvm_probe_result *ret_result,
                          struct vh_error *err);

/* Turns the last report of the probe process into a verdict. Pure. */
void host_kvm_probe_judge(const struct host_kvm_probe_options *opts, const struct host_kvm_report *report,
                          bool have_report, bool killed, int death_signal,
                          struct host_kvm_probe_result *r);

uint64_t host_now_ns(void);
