/*
 * dlpar: the guest's side of PAPR dynamic reconfiguration, through librtas alone (rtas_get_sensor,
 * rtas_set_indicator, rtas_set_power_level, rtas_get_power_level, rtas_cfg_connector), as drmgr
 * (PCI slots) and the Linux pseries kernel (CPUs, LMBs: dlpar.c, hotplug-cpu.c,
 * hotplug-memory.c) make the calls. tests/test_sandbox.py runs it inside `papr-emu
 * sandbox`, against librtas 2.0.4 built from Debian's source, and compares what it prints
 * with what papr_emu_client's ReferenceGuest reports for the same event.
 *
 *   dlpar pci-add DRC | pci-remove DRC
 *   dlpar cpu-add DRC | cpu-remove DRC [busy]
 *   dlpar memory-add DRC... | memory-remove DRC... [refuse=DRC]
 *   any of them with timeout=MS: rtas_delay_timeout(MS) first (librtas then stops retrying
 *   busy and extended-delay statuses after MS ms of sleeping)
 *
 * It prints one line, "outcome: RESULT|DETAIL|DRC,DRC..." (hex), RESULT being done, refused
 * or failed, as ReferenceGuest's Outcome (an RTAS call that failed: "CALL on DRC returned
 * STATUS" and no DRCs, as its RtasError); device-tree nodes go in and out through
 * /proc/ppc64/ofdt, and are found in /proc/device-tree, as drmgr does.
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librtas.h>

#define DR_INDICATOR 9002
#define ISOLATION_STATE 9001
#define ALLOCATION_STATE 9003
#define DR_ENTITY_SENSE 9003
#define SENSE_PRESENT 1
#define SENSE_UNUSABLE 2
#define LIVE_INSERTION -1
#define DT "/proc/device-tree"
#define MAX_NODES 64
#define MAX_PROPS 64
#define MAX_DRCS 64

struct prop {
	char name[64];
	int length;
	unsigned char value[1024];
};

struct node {
	char name[128];
	int parent; /* index in the walk's node array, -1 for the top node */
	int nprops;
	struct prop props[MAX_PROPS];
};

static struct node nodes[MAX_NODES];
static int nnodes;
static char detail[256];

static void outcome(const char *result, const unsigned int *drcs, int ndrcs)
{
	int i;
	printf("outcome: %s|%s|", result, detail);
	for (i = 0; i < ndrcs; i++)
		printf("%s%#x", i ? "," : "", drcs[i]);
	printf("\n");
}

/* ---- the device tree, as drmgr reads it ---- */

static int read_prop(const char *dir, const char *name, unsigned char *buf, int size)
{
	char path[4096];
	int fd, n;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, size);
	close(fd);
	return n;
}

/* The node (a /proc/device-tree directory) with a property whose cells contain drc: in
 * ibm,drc-indexes (the node that owns the connector: its children's parent) or
 * ibm,my-drc-index (the connector's node). */
static int find_node(const char *dir, const char *property, unsigned int drc, char *found, size_t size)
{
	unsigned char cells[65536];
	struct dirent *entry;
	DIR *d;
	int n, i, first = strcmp(property, "ibm,drc-indexes") == 0 ? 1 : 0;

	n = read_prop(dir, property, cells, sizeof(cells));
	for (i = first; i < n / 4; i++) {
		uint32_t cell;
		memcpy(&cell, cells + 4 * i, 4);
		if (be32toh(cell) == drc) {
			snprintf(found, size, "%s", dir);
			return 1;
		}
	}
	d = opendir(dir);
	if (!d)
		return 0;
	while ((entry = readdir(d))) {
		char child[4096];
		if (entry->d_name[0] == '.')
			continue;
		snprintf(child, sizeof(child), "%s/%s", dir, entry->d_name);
		if (entry->d_type == DT_DIR && find_node(child, property, drc, found, size)) {
			closedir(d);
			return 1;
		}
	}
	closedir(d);
	return 0;
}

/* ---- configure-connector ---- */

static uint32_t cell(const char *workarea, int index)
{
	uint32_t value;
	memcpy(&value, workarea + 4 * index, 4);
	return be32toh(value);
}

/* Walk the connector's fragment into nodes[]; the RTAS status that ended it (0: complete). */
static int configure(unsigned int drc)
{
	char workarea[PAGE_SIZE];
	int current = -1, rc;
	uint32_t be_drc = htobe32(drc);

	memset(workarea, 0, sizeof(workarea));
	memcpy(workarea, &be_drc, 4);
	nnodes = 0;
	for (;;) {
		rc = rtas_cfg_connector(workarea);
		if (rc == 1 || rc == 2) { /* next sibling, next child */
			struct node *node = &nodes[nnodes];
			if (nnodes == MAX_NODES)
				return -1;
			memset(node, 0, sizeof(*node));
			snprintf(node->name, sizeof(node->name), "%s", workarea + cell(workarea, 2));
			node->parent = rc == 2 ? current : (current >= 0 ? nodes[current].parent : -1);
			current = nnodes++;
		} else if (rc == 3) { /* next property */
			struct node *node = &nodes[current];
			struct prop *prop = &node->props[node->nprops];
			if (current < 0 || node->nprops == MAX_PROPS || cell(workarea, 3) > sizeof(prop->value))
				return -1;
			snprintf(prop->name, sizeof(prop->name), "%s", workarea + cell(workarea, 2));
			prop->length = cell(workarea, 3);
			memcpy(prop->value, workarea + cell(workarea, 4), prop->length);
			node->nprops++;
		} else if (rc == 4) { /* previous parent */
			current = nodes[current].parent;
		} else {
			return rc; /* 0 complete, or an error */
		}
	}
}

static const struct prop *find_prop(const struct node *node, const char *name)
{
	int i;
	for (i = 0; i < node->nprops; i++)
		if (strcmp(node->props[i].name, name) == 0)
			return &node->props[i];
	return NULL;
}

/* ---- /proc/ppc64/ofdt ---- */

static int ofdt_write(const char *buf, size_t len)
{
	int fd = open("/proc/ppc64/ofdt", O_WRONLY);
	ssize_t n;
	if (fd < 0)
		return -1;
	n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

static void node_path(int index, const char *base, char *path, size_t size)
{
	char parent[4096];
	if (index < 0) {
		snprintf(path, size, "%s", base);
		return;
	}
	node_path(nodes[index].parent, base, parent, sizeof(parent));
	snprintf(path, size, "%.3900s/%.127s", parent, nodes[index].name);
}

/* add_node for every node of the walk, parents first, under parent (a /proc/device-tree path). */
static int add_nodes(const char *parent)
{
	static char buf[65536];
	char path[4096];
	int i, j;
	for (i = 0; i < nnodes; i++) {
		char *pos = buf;
		node_path(i, parent + strlen(DT), path, sizeof(path));
		pos += sprintf(pos, "add_node %s", path);
		for (j = 0; j < nodes[i].nprops; j++) {
			const struct prop *prop = &nodes[i].props[j];
			pos += sprintf(pos, " %s %d ", prop->name, prop->length);
			memcpy(pos, prop->value, prop->length);
			pos += prop->length;
		}
		if (ofdt_write(buf, pos - buf) < 0)
			return -1;
	}
	return 0;
}

/* remove_node for the node at dir (a /proc/device-tree path) and everything under it, children first. */
static int remove_nodes(const char *dir)
{
	char buf[4200];
	struct dirent *entry;
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	while ((entry = readdir(d))) {
		char child[4096];
		if (entry->d_name[0] == '.' || entry->d_type != DT_DIR)
			continue;
		snprintf(child, sizeof(child), "%s/%s", dir, entry->d_name);
		if (remove_nodes(child) < 0) {
			closedir(d);
			return -1;
		}
	}
	closedir(d);
	snprintf(buf, sizeof(buf), "remove_node %s", dir + strlen(DT));
	return ofdt_write(buf, strlen(buf));
}

/* ---- dlpar.c: acquire and release ---- */

static int fail(const char *call, unsigned int drc, int status)
{
	snprintf(detail, sizeof(detail), "%s on %#x returned %d", call, drc, status);
	return -1;
}

static int acquire_drc(unsigned int drc)
{
	int state, rc = rtas_get_sensor(DR_ENTITY_SENSE, drc, &state);
	if (rc || state != SENSE_UNUSABLE)
		return fail("get-sensor-state", drc, rc ? rc : -state);
	if ((rc = rtas_set_indicator(ALLOCATION_STATE, drc, 1)))
		return fail("set-indicator(allocation usable)", drc, rc);
	if ((rc = rtas_set_indicator(ISOLATION_STATE, drc, 1))) {
		rtas_set_indicator(ALLOCATION_STATE, drc, 0);
		return fail("set-indicator(unisolate)", drc, rc);
	}
	return 0;
}

static int release_drc(unsigned int drc)
{
	int state, rc = rtas_get_sensor(DR_ENTITY_SENSE, drc, &state);
	if (rc || state != SENSE_PRESENT)
		return fail("get-sensor-state", drc, rc ? rc : -state);
	if ((rc = rtas_set_indicator(ISOLATION_STATE, drc, 0)))
		return fail("set-indicator(isolate)", drc, rc);
	if ((rc = rtas_set_indicator(ALLOCATION_STATE, drc, 0))) {
		rtas_set_indicator(ISOLATION_STATE, drc, 1);
		return fail("set-indicator(allocation unusable)", drc, rc);
	}
	return 0;
}

static int configure_or_release(unsigned int drc)
{
	int rc = configure(drc);
	if (rc) {
		release_drc(drc);
		return fail("ibm,configure-connector", drc, rc);
	}
	return 0;
}

/* ---- the flows ---- */

static int pci_add(unsigned int drc)
{
	char phb[4096];
	int i, state = 0, level, rc;

	rtas_set_indicator(DR_INDICATOR, drc, 1); /* LED active */
	for (i = 0; i < 30; i++) { /* drmgr waits for the adapter to be sensed */
		if (rtas_get_sensor(DR_ENTITY_SENSE, drc, &state) == 0 && state != 0)
			break;
		usleep(10000);
	}
	if (state == 0) {
		snprintf(detail, sizeof(detail), "slot stays empty");
		outcome("failed", &drc, 1);
		return 1;
	}
	rtas_set_power_level(LIVE_INSERTION, 100, &level);
	if ((rc = rtas_get_power_level(LIVE_INSERTION, &level)) || level != 100) { /* the slot's domain is up */
		snprintf(detail, sizeof(detail), "get-power-level: status %d, level %d", rc, level);
		outcome("failed", &drc, 1);
		return 1;
	}
	if ((rc = rtas_set_indicator(ISOLATION_STATE, drc, 1)))
		return fail("set-indicator(unisolate)", drc, rc), outcome("failed", NULL, 0), 1;
	if ((rc = configure(drc)))
		return fail("ibm,configure-connector", drc, rc), outcome("failed", NULL, 0), 1;
	if (!find_node(DT, "ibm,drc-indexes", drc, phb, sizeof(phb)) || add_nodes(phb) < 0) {
		snprintf(detail, sizeof(detail), "cannot add the node under the slot's PHB");
		outcome("failed", &drc, 1);
		return 1;
	}
	snprintf(detail, sizeof(detail), "%s", nodes[0].name);
	outcome("done", &drc, 1);
	return 0;
}

static int pci_remove(unsigned int drc)
{
	char node[4096];
	int level, rc;
	if (find_node(DT, "ibm,my-drc-index", drc, node, sizeof(node)) && remove_nodes(node) < 0) {
		snprintf(detail, sizeof(detail), "remove_node %.200s refused", node);
		outcome("failed", &drc, 1);
		return 1;
	}
	if ((rc = rtas_set_indicator(ISOLATION_STATE, drc, 0)))
		return fail("set-indicator(isolate)", drc, rc), outcome("failed", NULL, 0), 1;
	rtas_set_power_level(LIVE_INSERTION, 0, &level);
	rtas_set_indicator(DR_INDICATOR, drc, 0); /* LED off */
	outcome("done", &drc, 1);
	return 0;
}

static int cpu_add(unsigned int drc)
{
	char cpus[4096];
	if (acquire_drc(drc) < 0 || configure_or_release(drc) < 0)
		return outcome("failed", NULL, 0), 1;
	if (!find_node(DT, "ibm,drc-indexes", drc, cpus, sizeof(cpus)) || add_nodes(cpus) < 0) {
		snprintf(detail, sizeof(detail), "cannot add the CPU node");
		outcome("failed", &drc, 1);
		return 1;
	}
	snprintf(detail, sizeof(detail), "%s", nodes[0].name);
	outcome("done", &drc, 1);
	return 0;
}

static int cpu_remove(unsigned int drc, int busy)
{
	char node[4096];
	int state;
	if (busy) { /* offlining failed: since 5.12 the kernel says so by unisolating */
		if (rtas_get_sensor(DR_ENTITY_SENSE, drc, &state) == 0 && state == SENSE_PRESENT)
			rtas_set_indicator(ISOLATION_STATE, drc, 1);
		snprintf(detail, sizeof(detail), "CPU busy");
		outcome("refused", &drc, 1);
		return 0;
	}
	if (release_drc(drc) < 0)
		return outcome("failed", NULL, 0), 1;
	if (find_node(DT, "ibm,my-drc-index", drc, node, sizeof(node)) && remove_nodes(node) < 0) {
		snprintf(detail, sizeof(detail), "remove_node %.200s refused", node);
		outcome("failed", &drc, 1);
		return 1;
	}
	outcome("done", &drc, 1);
	return 0;
}

static int memory_add(const unsigned int *drcs, int n)
{
	int i;
	for (i = 0; i < n; i++) {
		if (acquire_drc(drcs[i]) < 0 || configure_or_release(drcs[i]) < 0)
			break;
		if (!find_prop(&nodes[0], "ibm,associativity")) { /* dlpar_add_lmb needs it */
			release_drc(drcs[i]);
			fail("ibm,configure-connector (no ibm,associativity)", drcs[i], 0);
			break;
		}
	}
	if (i < n) {
		int added = i;
		for (i = 0; i < added; i++)
			release_drc(drcs[i]);
		snprintf(detail, sizeof(detail), "added %d of %d LMBs", added, n);
		outcome("failed", drcs, added);
		return 1;
	}
	snprintf(detail, sizeof(detail), "%d LMBs", n);
	outcome("done", drcs, n);
	return 0;
}

static int memory_remove(const unsigned int *drcs, int n, unsigned int refuse)
{
	int i, removed;
	for (removed = 0; removed < n && drcs[removed] != refuse; removed++)
		; /* dlpar_remove_lmb: offline and remove, no RTAS call */
	if (removed < n) { /* "Memory indexed-count-remove failed, adding any removed LMBs" */
		int state;
		for (i = 0; i < removed; i++) {
			if (rtas_get_sensor(DR_ENTITY_SENSE, drcs[i], &state) == 0 && state == SENSE_PRESENT)
				rtas_set_indicator(ISOLATION_STATE, drcs[i], 1);
			if (configure(drcs[i]))
				break;
		}
		snprintf(detail, sizeof(detail), "LMB %#x cannot be offlined", refuse);
		outcome("refused", drcs, removed);
		return 0;
	}
	for (i = 0; i < n; i++)
		release_drc(drcs[i]); /* the kernel ignores the result here */
	snprintf(detail, sizeof(detail), "%d LMBs", n);
	outcome("done", drcs, n);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned int drcs[MAX_DRCS], refuse = 0;
	int n = 0, busy = 0, i;

	if (argc < 3) {
		fprintf(stderr, "usage: dlpar ACTION DRC... [busy] [refuse=DRC] [timeout=MS]\n");
		return 2;
	}
	for (i = 2; i < argc && n < MAX_DRCS; i++) {
		if (strcmp(argv[i], "busy") == 0)
			busy = 1;
		else if (strncmp(argv[i], "refuse=", 7) == 0)
			refuse = strtoul(argv[i] + 7, NULL, 0);
		else if (strncmp(argv[i], "timeout=", 8) == 0)
			rtas_delay_timeout(strtoull(argv[i] + 8, NULL, 0));
		else
			drcs[n++] = strtoul(argv[i], NULL, 0);
	}
	if (strcmp(argv[1], "pci-add") == 0)
		return pci_add(drcs[0]);
	if (strcmp(argv[1], "pci-remove") == 0)
		return pci_remove(drcs[0]);
	if (strcmp(argv[1], "cpu-add") == 0)
		return cpu_add(drcs[0]);
	if (strcmp(argv[1], "cpu-remove") == 0)
		return cpu_remove(drcs[0], busy);
	if (strcmp(argv[1], "memory-add") == 0)
		return memory_add(drcs, n);
	if (strcmp(argv[1], "memory-remove") == 0)
		return memory_remove(drcs, n, refuse);
	fprintf(stderr, "dlpar: unknown action %s\n", argv[1]);
	return 2;
}
