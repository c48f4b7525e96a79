/* Fault injection hook of the updlrm emulator: rules, arming (host library) and
 * firing (DPU runtime).  The grammar is in fault_inject.h; emulator/README.md,
 * "Fault injection", is the user's documentation. */
#define _GNU_SOURCE
#include "fault_inject.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- host side ---------------------------------------------------------- */

enum rule_kind { RULE_FAULT = EMU_INJECT_FAULT, RULE_KILL = EMU_INJECT_KILL, RULE_HANG = EMU_INJECT_HANG, RULE_ALLOC };

#define ANY UINT32_MAX

struct rule {
    enum rule_kind kind;
    uint32_t dpu;    /* ANY: every DPU */
    uint64_t launch; /* 0: every launch */
    int32_t tasklet; /* -1: any */
    uint32_t dma;    /* 0: at the tasklet's start */
};

struct updlrm_emu_fault_plan {
    char *text;
    uint32_t nr_rules;
    struct rule *rules;
    uint32_t nr_dpus;
    uint64_t *launches; /* per DPU, since the rules were set */
};

static int parse_number(const char *value, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    if (!*value || *value == '-') {
        return -1;
    }
    unsigned long long v = strtoull(value, &end, 10);
    if (*end || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_rule(char *text, struct rule *rule, char *error, size_t error_size)
{
    *rule = (struct rule){.dpu = ANY, .tasklet = -1};
    char *keys = strchr(text, ':');
    if (keys) {
        *keys++ = 0;
    }
    static const char *const kinds[] = {
        [RULE_FAULT] = "fault", [RULE_KILL] = "kill", [RULE_HANG] = "hang", [RULE_ALLOC] = "alloc"};
    bool known = false;
    for (int k = RULE_FAULT; k <= RULE_ALLOC; k++) {
        if (!strcmp(text, kinds[k])) {
            rule->kind = (enum rule_kind)k;
            known = true;
        }
    }
    if (!known) {
        snprintf(error, error_size, "unknown kind '%s' (fault, kill, hang or alloc)", text);
        return -1;
    }
    char *save = NULL;
    for (char *item = keys ? strtok_r(keys, ",", &save) : NULL; item; item = strtok_r(NULL, ",", &save)) {
        char *equal = strchr(item, '=');
        if (!equal) {
            snprintf(error, error_size, "'%s' is not key=value (keys: dpu, launch, tasklet, dma)", item);
            return -1;
        }
        *equal = 0;
        const char *key = item, *value = equal + 1;
        uint64_t v = 0;
        bool ok;
        if (!strcmp(key, "dpu")) {
            ok = !parse_number(value, ANY - 1, &v);
            rule->dpu = (uint32_t)v;
        } else if (!strcmp(key, "launch")) {
            ok = !parse_number(value, UINT64_MAX, &v) && v >= 1;
            rule->launch = v;
        } else if (!strcmp(key, "tasklet")) {
            ok = !parse_number(value, EMU_MAX_TASKLETS - 1, &v);
            rule->tasklet = (int32_t)v;
        } else if (!strcmp(key, "dma")) {
            ok = !parse_number(value, UINT32_MAX, &v) && v >= 1;
            rule->dma = (uint32_t)v;
        } else {
            snprintf(error, error_size, "unknown key '%s' (dpu, launch, tasklet, dma)", key);
            return -1;
        }
        if (!ok) {
            snprintf(error, error_size, "invalid %s '%s' (dpu >= 0, launch >= 1, tasklet 0..%u, dma >= 1)", key, value,
                     EMU_MAX_TASKLETS - 1);
            return -1;
        }
        if (rule->kind == RULE_ALLOC) {
            snprintf(error, error_size, "'alloc' takes no keys");
            return -1;
        }
    }
    return 0;
}

void updlrm_emu_fault_plan_free(struct updlrm_emu_fault_plan *plan)
{
    if (!plan) {
        return;
    }
    free(plan->text);
    free(plan->rules);
    free(plan->launches);
    free(plan);
}

int updlrm_emu_fault_plan_parse(const char *rules, struct updlrm_emu_fault_plan **out, char *error, size_t error_size)
{
    *out = NULL;
    if (!rules || !*rules) {
        return 0;
    }
    struct updlrm_emu_fault_plan *plan = calloc(1, sizeof *plan);
    char *copy = strdup(rules);
    if (plan) {
        plan->text = strdup(rules);
    }
    size_t capacity = 1;
    for (const char *c = rules; *c; c++) {
        capacity += *c == ';';
    }
    if (plan) {
        plan->rules = calloc(capacity, sizeof *plan->rules);
    }
    if (!plan || !copy || !plan->text || !plan->rules) {
        free(copy);
        updlrm_emu_fault_plan_free(plan);
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    char *save = NULL;
    for (char *item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        while (*item == ' ') {
            item++;
        }
        if (!*item) {
            continue;
        }
        char reason[200];
        if (parse_rule(item, &plan->rules[plan->nr_rules], reason, sizeof reason)) {
            snprintf(error, error_size, "rule %u of '%s': %s", plan->nr_rules + 1, rules, reason);
            free(copy);
            updlrm_emu_fault_plan_free(plan);
            return -1;
        }
        plan->nr_rules++;
    }
    free(copy);
    *out = plan;
    return 0;
}

bool updlrm_emu_fault_plan_refuses_alloc(const struct updlrm_emu_fault_plan *plan)
{
    for (uint32_t i = 0; plan && i < plan->nr_rules; i++) {
        if (plan->rules[i].kind == RULE_ALLOC) {
            return true;
        }
    }
    return false;
}

const char *updlrm_emu_fault_plan_text(const struct updlrm_emu_fault_plan *plan)
{
    return plan ? plan->text : "";
}

void updlrm_emu_fault_plan_arm(struct updlrm_emu_fault_plan *plan, uint32_t nr_dpus, uint32_t dpu, bool has_timeout,
                               struct emu_fault_inject *armed)
{
    *armed = (struct emu_fault_inject){.kind = EMU_INJECT_NONE, .tasklet = -1};
    if (!plan) {
        return;
    }
    if (!plan->launches) {
        plan->launches = calloc(nr_dpus, sizeof *plan->launches);
        if (!plan->launches) {
            return; /* out of memory: no injection rather than a wrong one */
        }
        plan->nr_dpus = nr_dpus;
    }
    if (dpu >= plan->nr_dpus) {
        return;
    }
    uint64_t launch = ++plan->launches[dpu];
    for (uint32_t i = 0; i < plan->nr_rules; i++) {
        const struct rule *r = &plan->rules[i];
        if (r->kind == RULE_ALLOC || (r->dpu != ANY && r->dpu != dpu) || (r->launch && r->launch != launch)) {
            continue;
        }
        *armed =
            (struct emu_fault_inject){.kind = (uint32_t)r->kind, .tasklet = r->tasklet, .dma = r->dma, .rule = i + 1};
        if (r->kind == RULE_HANG && !has_timeout) {
            armed->kind = EMU_INJECT_FAULT;
            armed->no_timeout = 1;
        }
        return;
    }
}

/* ---- worker side -------------------------------------------------------- */

bool updlrm_emu_fault_armed;
static struct emu_fault_inject armed_rule;
static uint32_t dmas_seen; /* of the launch (of armed_rule.tasklet when given) */
static char message[224];

void updlrm_emu_fault_begin(const struct emu_fault_inject *armed)
{
    armed_rule = *armed;
    dmas_seen = 0;
    updlrm_emu_fault_armed = armed->kind != EMU_INJECT_NONE;
}

static enum updlrm_emu_fault_action fire(uint32_t tasklet)
{
    updlrm_emu_fault_armed = false; /* once per launch */
    switch (armed_rule.kind) {
    case EMU_INJECT_KILL:
        raise(SIGKILL);
        break;
    case EMU_INJECT_HANG:
        for (;;) {
            pause(); /* until the host's launch timeout kills the worker */
        }
    default:
        break;
    }
    if (armed_rule.no_timeout) {
        snprintf(message, sizeof message,
                 "injected hang (UPDLRM_EMU_FAULTS rule %u) in tasklet %u made a fault: no launch timeout is set "
                 "(profile timeout= or UPDLRM_EMU_TIMEOUT), it would never end",
                 armed_rule.rule, tasklet);
    } else if (armed_rule.dma) {
        snprintf(message, sizeof message,
                 "injected fault (UPDLRM_EMU_FAULTS rule %u) at MRAM DMA %u of the launch, in tasklet %u",
                 armed_rule.rule, armed_rule.dma, tasklet);
    } else {
        snprintf(message, sizeof message, "injected fault (UPDLRM_EMU_FAULTS rule %u) in tasklet %u", armed_rule.rule,
                 tasklet);
    }
    return UPDLRM_EMU_FAULT_ACTION_FAULT;
}

enum updlrm_emu_fault_action updlrm_emu_fault_at_start(uint32_t tasklet)
{
    if (armed_rule.dma) {
        return UPDLRM_EMU_FAULT_ACTION_NONE;
    }
    if (armed_rule.tasklet >= 0 && (uint32_t)armed_rule.tasklet != tasklet) {
        return UPDLRM_EMU_FAULT_ACTION_NONE;
    }
    return fire(tasklet);
}

enum updlrm_emu_fault_action updlrm_emu_fault_at_dma(uint32_t tasklet)
{
    if (!armed_rule.dma || (armed_rule.tasklet >= 0 && (uint32_t)armed_rule.tasklet != tasklet)) {
        return UPDLRM_EMU_FAULT_ACTION_NONE;
    }
    if (++dmas_seen < armed_rule.dma) {
        return UPDLRM_EMU_FAULT_ACTION_NONE;
    }
    return fire(tasklet);
}

const char *updlrm_emu_fault_message(void)
{
    return message;
}
