/*
 * The scheduler's queues: intrusive doubly linked lists of groups.
 *
 *   q[WAITING]  head ─▶ [g] ⇄ [g] ⇄ [g] ◀─ tail       g->queue = WAITING
 *
 * A group is on exactly one list at a time (or on none: DUET__Q_NONE) and carries its links, so
 * pushing and popping at either end and removing from the middle (abort, finish) are O(1) and
 * never allocate. The head is the next group to schedule; the tail of the running queue is the
 * first preemption victim.
 *
 * The priority policy sorts a queue by (priority, arrival_time) with a stable merge sort on the
 * links (Simon Tatham's list merge sort), after an O(n) check that skips sorted queues: once a
 * queue is sorted only newly appended groups can break the order.
 */
#include "scheduler-int.h"

#include <assert.h>

void duet__queue_push_back(duet_scheduler *s, int q, struct duet__group *g)
{
    struct duet__queue *l = &s->q[q];

    assert(g->queue == DUET__Q_NONE);
    g->prev = l->tail;
    g->next = NULL;
    if (l->tail)
        l->tail->next = g;
    else
        l->head = g;
    l->tail = g;
    l->n++;
    g->queue = (uint8_t)q;
}

void duet__queue_push_front(duet_scheduler *s, int q, struct duet__group *g)
{
    struct duet__queue *l = &s->q[q];

    assert(g->queue == DUET__Q_NONE);
    g->prev = NULL;
    g->next = l->head;
    if (l->head)
        l->head->prev = g;
    else
        l->tail = g;
    l->head = g;
    l->n++;
    g->queue = (uint8_t)q;
}

void duet__queue_remove(duet_scheduler *s, struct duet__group *g)
{
    struct duet__queue *l;

    if (g->queue == DUET__Q_NONE)
        return;
    l = &s->q[g->queue];
    if (g->prev)
        g->prev->next = g->next;
    else
        l->head = g->next;
    if (g->next)
        g->next->prev = g->prev;
    else
        l->tail = g->prev;
    l->n--;
    g->prev = g->next = NULL;
    g->queue = DUET__Q_NONE;
}

void duet__queue_splice_back(duet_scheduler *s, int from, int to)
{
    struct duet__queue *a = &s->q[from], *b = &s->q[to];

    if (!a->head)
        return;
    for (struct duet__group *g = a->head; g; g = g->next)
        g->queue = (uint8_t)to;
    if (b->tail) {
        b->tail->next = a->head;
        a->head->prev = b->tail;
    } else {
        b->head = a->head;
    }
    b->tail = a->tail;
    b->n += a->n;
    *a = (struct duet__queue){0};
}

void duet__queue_waiting_push_front(duet_scheduler *s, struct duet__group *g)
{
    struct duet__group *head = s->q[DUET__Q_WAITING].head;
    struct duet__queue *l = &s->q[DUET__Q_WAITING];

    if (!head || !head->allocated) {
        duet__queue_push_front(s, DUET__Q_WAITING, g);
        return;
    }
    assert(g->queue == DUET__Q_NONE);
    g->prev = head;
    g->next = head->next;
    if (head->next)
        head->next->prev = g;
    else
        l->tail = g;
    head->next = g;
    l->n++;
    g->queue = DUET__Q_WAITING;
}

bool duet__group_before(const struct duet__group *a, const struct duet__group *b)
{
    if (a->priority != b->priority)
        return a->priority < b->priority;
    return a->arrival_time < b->arrival_time;
}

static bool sorted(const struct duet__group *g)
{
    for (; g && g->next; g = g->next)
        if (duet__group_before(g->next, g))
            return false;
    return true;
}

/* Merges the sorted runs p[0..psize) and q[0..qsize) (q follows p) onto *tail. */
static struct duet__group *merge_runs(struct duet__group *p, uint32_t psize, struct duet__group *q,
                                      uint32_t qsize, struct duet__group **tail,
                                      struct duet__group **head)
{
    while (psize > 0 || (qsize > 0 && q)) {
        struct duet__group *e;

        /* Take from p on ties (stability) and whenever q is spent. */
        if (psize == 0) {
            e = q, q = q->next, qsize--;
        } else if (qsize == 0 || !q || !duet__group_before(q, p)) {
            e = p, p = p->next, psize--;
        } else {
            e = q, q = q->next, qsize--;
        }
        if (*tail)
            (*tail)->next = e;
        else
            *head = e;
        e->prev = *tail;
        *tail = e;
    }
    return q;
}

/* Tatham's bottom-up merge sort of the chain starting at head; returns the new head. */
static struct duet__group *merge_sort(struct duet__group *head, struct duet__group **out_tail)
{
    for (uint32_t k = 1;; k *= 2) {
        struct duet__group *p = head, *tail = NULL;
        uint32_t merges = 0;

        head = NULL;
        while (p) {
            struct duet__group *q = p;
            uint32_t psize = 0;

            merges++;
            while (psize < k && q)
                q = q->next, psize++;
            p = merge_runs(p, psize, q, k, &tail, &head);
        }
        tail->next = NULL;
        if (merges <= 1) {
            *out_tail = tail;
            return head;
        }
    }
}

void duet__queue_sort_priority(duet_scheduler *s, int q)
{
    struct duet__queue *l = &s->q[q];
    struct duet__group *first = l->head, *tail;

    /* A partially re-admitted waiting head keeps its place in front. */
    if (q == DUET__Q_WAITING && first && first->allocated)
        first = first->next;
    if (!first || sorted(first))
        return;
    if (first != l->head) {
        first = merge_sort(first, &tail);
        l->head->next = first;
        first->prev = l->head;
    } else {
        l->head = merge_sort(first, &tail);
        l->head->prev = NULL;
    }
    l->tail = tail;
}
