/*
 * invoice.h - invoice numbers, tax math and rendering.
 *
 * Numbers are gapless per kind and calendar year (UTC): "2026-000001" for
 * invoices, "CN-2026-000001" for credit notes. invoice_issue() takes the next
 * number from the (kind, year) counter row in the SAME transaction as the
 * invoice row, so a rolled-back transaction gives its number back and no
 * number is ever skipped or used twice (the counter row's lock serialises
 * concurrent issuers on PostgreSQL; SQLite has one writer).
 *
 * Tax: integer math in minor units. tax = round_half_up(net * rate_bp / 10000),
 * total = net + tax; prices in the catalog are net of tax. rate_bp is basis
 * points (2000 = 20 %), 0..10000.
 */
#ifndef PULSE_SERVICES_COMMERCE_INVOICE_H
#define PULSE_SERVICES_COMMERCE_INVOICE_H

#include "core/err.h"
#include "store/sql.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

int64_t invoice_tax_cents(int64_t net_cents, int rate_bp);

/* "2026-000042" (kind "invoice") or "CN-2026-000042" (kind "credit_note"). */
void invoice_format_number(const char *kind, int year, int64_t n, char *out, size_t size);

typedef struct invoice_input {
    const char *kind;        /* "invoice" | "credit_note" */
    const char *order_id, *buyer_id, *currency, *description;
    int64_t net_cents, tax_cents; /* negative for a credit note */
    int tax_rate_bp;
    int64_t now_ms;
} invoice_input;

/* Inserts the invoice and allocates its number inside tx. id and number are
 * filled (id >= 40 bytes, number >= 32 bytes). */
int invoice_issue(sql_tx *tx, const invoice_input *in, char *id, char *number, pl_error *err);

/* The invoice as JSON (*out, a new reference), or *out = NULL when there is none. */
int invoice_load(sql_tx *tx, const char *id, json_t **out, pl_error *err);

/* A printable HTML page for an invoice JSON object (every string escaped).
 * malloc'd. */
char *invoice_html(const json_t *inv);

/* HTML-escapes s into a malloc'd string. */
char *html_escape(const char *s);

#endif
