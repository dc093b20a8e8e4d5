/* Per-partition offset bookkeeping: which offsets are still unfinished,
 * so that the position stored for commit never passes one of them, even
 * when key-hash lanes finish out of order or records are filtered. */
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"
#include "internal.h"

#define AT(p, i) ((p)->head + (i)) % (p)->cap

void sl__kp_track(struct kpart *p, int64_t offset)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        int64_t *pend = sl_malloc(cap * sizeof(*pend));
        uint8_t *done = sl_malloc(cap);
        for (size_t i = 0; i < p->n; i++) {
            pend[i] = p->pend[AT(p, i)];
            done[i] = p->done[AT(p, i)];
        }
        free(p->pend);
        free(p->done);
        p->pend = pend;
        p->done = done;
        p->head = 0;
        p->cap = cap;
    }
    p->pend[AT(p, p->n)] = offset;
    p->done[AT(p, p->n)] = 0;
    p->n++;
    if (offset + 1 > p->next)
        p->next = offset + 1;
}

/* Binary search: offsets in the ring only grow. */
void sl__kp_finish(struct kpart *p, int64_t offset)
{
    size_t lo = 0, hi = p->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->pend[AT(p, mid)] < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < p->n && p->pend[AT(p, lo)] == offset)
        p->done[AT(p, lo)] = 1;
    while (p->n > 0 && p->done[p->head]) {
        p->head = (p->head + 1) % p->cap;
        p->n--;
    }
}

int64_t sl__kp_position(const struct kpart *p)
{
    return p->n > 0 ? p->pend[p->head] : p->next;
}

void sl__kp_reset(struct kpart *p)
{
    p->head = p->n = 0;
    p->next = -1;
    p->stored = -1;
    p->lost_from = -1;
    p->outstanding = 0;
    p->out_bytes = 0;
    p->full = false;
    p->stuck = false;
}

void sl__kp_free(struct kpart *p)
{
    if (!p)
        return;
    free(p->pend);
    free(p->done);
    free(p);
}
