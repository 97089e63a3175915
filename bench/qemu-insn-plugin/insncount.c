/*
 * insncount: a QEMU TCG plugin that counts guest instructions executed.
 *
 * Built for QEMU 7.2 (plugin API version 1). Debian packages no
 * qemu-plugin.h, so the few declarations used are written out below from
 * that API; the plugin needs nothing but libc and pthreads.
 *
 * Counting: at translation every translation block (TB) gets an execution
 * callback carrying its instruction count; the callback adds it to a
 * counter of the vCPU (one per guest thread in qemu-user), so threads do
 * not race. A TB left early by a fault still counts whole (guest faults
 * are rare in the programs measured here; syscalls end a TB).
 *
 * Arguments (-plugin ./insncount.so,out=FILE,top=N):
 *   out=FILE  append "insns <total>" to FILE at exit (else to stderr;
 *             qemu_plugin_outs would print only under -d plugin)
 * x86 string instructions with a REP prefix (rep movsb, rep stosq, ...) are
 * executed by QEMU one iteration per TB execution, so each iteration counts
 * as one instruction (a 1 MiB `rep movsb` counts about 1 M). Their
 * iterations are also counted apart and printed as "rep_iters", so a
 * reader can see how much of an x86 total they are.
 *
 *   top=N     also list the N functions (ELF symbols of the main binary)
 *             that executed the most instructions, and print every
 *             translation block QEMU has no symbol for (shared libraries,
 *             assembly without a symbol type) as "unsym COUNT FILE OFFSET":
 *             its host address (qemu-user maps guest code into its own
 *             address space) resolved through /proc/self/maps to a file
 *             offset, which bench/arm-insns.sh turns into a symbol with nm.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the QEMU 7.2 plugin API, the parts used here --------------------- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags {
    QEMU_PLUGIN_CB_NO_REGS,
    QEMU_PLUGIN_CB_R_REGS,
    QEMU_PLUGIN_CB_RW_REGS,
};
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                                  qemu_plugin_vcpu_tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb,
                                                 qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                           void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *insn);
extern void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *insn);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                                   qemu_plugin_vcpu_udata_cb_t cb,
                                                   enum qemu_plugin_cb_flags flags, void *userdata);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;
/* ---------------------------------------------------------------------- */

/* One counter per vCPU, each on its own cache line. qemu-user reuses the
 * indexes of exited threads; past MAX_VCPUS an atomic shared slot is used. */
#define MAX_VCPUS 1024
struct slot {
    uint64_t n;
    char pad[56];
};
static struct slot counts[MAX_VCPUS];
static uint64_t overflow;
static struct slot reps[MAX_VCPUS];
static uint64_t reps_overflow;
static bool x86;

/* Per-function totals (top=N). Keyed by the symbol string's address, which
 * QEMU keeps for the life of the process. */
#define SYMS 65536
struct sym {
    const char *name;
    uint64_t n;
};
static struct sym syms[SYMS];
static struct sym unknown = {"(no symbol: libc, loader, vdso)", 0};
static pthread_mutex_t syms_lock = PTHREAD_MUTEX_INITIALIZER;
struct tbinfo {
    uint64_t n;
    struct sym *sym;
    uint64_t count; /* instructions executed in this TB (unsymbolized only) */
    uintptr_t haddr;
    struct tbinfo *next;
};
static struct tbinfo *unsym_list; /* under syms_lock */

static char *out_path;
static int top;

static void add(unsigned int vcpu, uint64_t n)
{
    if (vcpu < MAX_VCPUS)
        counts[vcpu].n += n;
    else
        __atomic_fetch_add(&overflow, n, __ATOMIC_RELAXED);
}

static void rep_exec(unsigned int vcpu, void *udata)
{
    (void)udata;
    if (vcpu < MAX_VCPUS)
        reps[vcpu].n++;
    else
        __atomic_fetch_add(&reps_overflow, 1, __ATOMIC_RELAXED);
}

/* Is this x86 instruction a string instruction with a REP/REPNE prefix? */
static bool is_rep_string(const struct qemu_plugin_insn *insn)
{
    const uint8_t *b = qemu_plugin_insn_data(insn);
    size_t len = qemu_plugin_insn_size(insn);
    bool rep = false;
    size_t i = 0;
    for (; i < len; i++) {
        uint8_t c = b[i];
        if (c == 0xF2 || c == 0xF3)
            rep = true;
        else if (!(c == 0x66 || c == 0x67 || c == 0x2E || c == 0x36 || c == 0x3E ||
                   c == 0x26 || c == 0x64 || c == 0x65 || (c >= 0x40 && c <= 0x4F)))
            break;
    }
    if (!rep || i >= len)
        return false;
    uint8_t op = b[i];
    return (op >= 0xA4 && op <= 0xA7) || (op >= 0xAA && op <= 0xAF) || (op >= 0x6C && op <= 0x6F);
}

static void tb_exec(unsigned int vcpu, void *udata)
{
    add(vcpu, (uint64_t)(uintptr_t)udata);
}

static void tb_exec_profiled(unsigned int vcpu, void *udata)
{
    struct tbinfo *t = udata;
    add(vcpu, t->n);
    __atomic_fetch_add(&t->sym->n, t->n, __ATOMIC_RELAXED);
    if (t->sym == &unknown)
        __atomic_fetch_add(&t->count, t->n, __ATOMIC_RELAXED);
}

static struct sym *sym_for(const char *name)
{
    if (!name)
        return &unknown;
    size_t h = ((uintptr_t)name >> 3) * 0x9E3779B97F4A7C15ull;
    pthread_mutex_lock(&syms_lock);
    for (size_t i = 0; i < SYMS; i++) {
        struct sym *s = &syms[(h + i) % SYMS];
        if (s->name == name || !s->name) {
            s->name = name;
            pthread_mutex_unlock(&syms_lock);
            return s;
        }
    }
    pthread_mutex_unlock(&syms_lock);
    return &unknown;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; x86 && i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (is_rep_string(insn))
            qemu_plugin_register_vcpu_insn_exec_cb(insn, rep_exec, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
    if (!top) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
        return;
    }
    struct tbinfo *t = malloc(sizeof *t);
    if (!t)
        abort();
    t->n = n;
    struct qemu_plugin_insn *first = n ? qemu_plugin_tb_get_insn(tb, 0) : NULL;
    t->sym = sym_for(first ? qemu_plugin_insn_symbol(first) : NULL);
    t->count = 0;
    t->haddr = first ? (uintptr_t)qemu_plugin_insn_haddr(first) : 0;
    if (t->sym == &unknown) {
        pthread_mutex_lock(&syms_lock);
        t->next = unsym_list;
        unsym_list = t;
        pthread_mutex_unlock(&syms_lock);
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec_profiled, QEMU_PLUGIN_CB_NO_REGS, t);
}

static int by_count(const void *a, const void *b)
{
    const struct sym *x = a, *y = b;
    return x->n < y->n ? 1 : x->n > y->n ? -1 : 0;
}

/* "unsym COUNT FILE OFFSET" for every executed TB without a symbol. */
static void print_unsymbolized(FILE *f)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        return;
    struct map {
        uintptr_t lo, hi, off;
        char path[256];
    } *m = NULL;
    size_t nm = 0, cap = 0;
    char line[1024];
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi, off;
        char perms[8], path[256] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %255s", &lo, &hi, perms, &off, path) < 4)
            continue;
        if (nm == cap) {
            cap = cap ? 2 * cap : 256;
            m = realloc(m, cap * sizeof *m);
            if (!m)
                abort();
        }
        m[nm].lo = lo;
        m[nm].hi = hi;
        m[nm].off = off;
        snprintf(m[nm].path, sizeof m[nm].path, "%s", path[0] ? path : "?");
        nm++;
    }
    fclose(maps);
    for (struct tbinfo *t = unsym_list; t; t = t->next) {
        if (!t->count)
            continue;
        size_t i = 0;
        while (i < nm && !(t->haddr >= m[i].lo && t->haddr < m[i].hi))
            i++;
        if (i < nm)
            fprintf(f, "unsym %" PRIu64 " %s %#lx\n", t->count, m[i].path,
                    (unsigned long)(t->haddr - m[i].lo + m[i].off));
        else
            fprintf(f, "unsym %" PRIu64 " ? %#lx\n", t->count, (unsigned long)t->haddr);
    }
    free(m);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    uint64_t total = __atomic_load_n(&overflow, __ATOMIC_RELAXED);
    uint64_t rep_total = __atomic_load_n(&reps_overflow, __ATOMIC_RELAXED);
    for (int i = 0; i < MAX_VCPUS; i++) {
        total += counts[i].n;
        rep_total += reps[i].n;
    }
    FILE *f = out_path ? fopen(out_path, "a") : stderr;
    if (!f) {
        perror(out_path);
        f = stderr;
    }
    char line[512];
    snprintf(line, sizeof line, "insns %" PRIu64 "\n", total);
    fputs(line, f);
    if (x86) {
        snprintf(line, sizeof line, "rep_iters %" PRIu64 "\n", rep_total);
        fputs(line, f);
    }
    if (top) {
        static struct sym used[SYMS + 1];
        size_t k = 0;
        for (size_t i = 0; i < SYMS; i++)
            if (syms[i].name && syms[i].n)
                used[k++] = syms[i];
        used[k++] = unknown;
        qsort(used, k, sizeof used[0], by_count);
        for (size_t i = 0; i < k && i < (size_t)top; i++) {
            snprintf(line, sizeof line, "sym %" PRIu64 " %5.2f%% %s\n", used[i].n,
                     total ? 100.0 * used[i].n / total : 0.0, used[i].name);
            fputs(line, f);
        }
        print_unsymbolized(f);
    }
    if (f != stderr)
        fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    x86 = info->target_name &&
          (!strcmp(info->target_name, "x86_64") || !strcmp(info->target_name, "i386"));
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4)) {
            out_path = strdup(argv[i] + 4);
        } else if (!strncmp(argv[i], "top=", 4)) {
            top = atoi(argv[i] + 4);
        } else {
            fprintf(stderr, "insncount: unknown argument %s (out=FILE, top=N)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
