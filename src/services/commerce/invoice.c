/* invoice.c - gapless invoice numbers, tax, the invoice row and its HTML page. */
#include "services/commerce/invoice.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/uuid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t invoice_tax_cents(int64_t net, int rate_bp)
{
    /* half away from zero, so a credit note's tax is exactly minus the invoice's */
    int64_t p = net * rate_bp;
    return p >= 0 ? (p + 5000) / 10000 : -((-p + 5000) / 10000);
}

void invoice_format_number(const char *kind, int year, int64_t n, char *out, size_t size)
{
    snprintf(out, size, "%s%04d-%06lld", strcmp(kind, "credit_note") == 0 ? "CN-" : "", year, (long long)n);
}

static void read_int(void *ud, sql_rows *r) { *(int64_t *)ud = sql_int(r, 0); }

int invoice_issue(sql_tx *tx, const invoice_input *in, char *id, char *number, pl_error *err)
{
    time_t secs = (time_t)(in->now_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int year = tm.tm_year + 1900;
    int64_t n = 0;
    int rc = sql_one(tx,
                     "INSERT INTO commerce_invoice_counters (kind, year, last) VALUES ($1, $2, 1)"
                     " ON CONFLICT (kind, year) DO UPDATE SET last = commerce_invoice_counters.last + 1 RETURNING last",
                     SQL_ARGS(SQL_TEXT(in->kind), SQL_INT(year)), read_int, &n, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return err_set(err, PL_EINTERNAL, NULL, "the invoice counter returned no row");
    uuid7_new(id);
    invoice_format_number(in->kind, year, n, number, 32);
    char now[32];
    time_rfc3339(in->now_ms, now, sizeof now);
    int64_t total = in->net_cents + in->tax_cents;
    json_t *lines = json_pack("[{s:s, s:i, s:I, s:I, s:I, s:I}]", "description", in->description, "quantity", 1,
                              "unit_cents", (json_int_t)in->net_cents, "net_cents", (json_int_t)in->net_cents,
                              "tax_cents", (json_int_t)in->tax_cents, "total_cents", (json_int_t)total);
    char *ltext = json_compact(lines);
    json_decref(lines);
    rc = sql_exec(tx,
                  "INSERT INTO commerce_invoices (id, number, kind, order_id, buyer_id, currency, subtotal_cents,"
                  " tax_rate_bp, tax_cents, total_cents, lines, issued_at)"
                  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                  SQL_ARGS(SQL_TEXT(id), SQL_TEXT(number), SQL_TEXT(in->kind), SQL_TEXT(in->order_id),
                           SQL_TEXT(in->buyer_id), SQL_TEXT(in->currency), SQL_INT(in->net_cents),
                           SQL_INT(in->tax_rate_bp), SQL_INT(in->tax_cents), SQL_INT(total), SQL_TEXT(ltext),
                           SQL_TEXT(now)),
                  NULL, err);
    free(ltext);
    return rc;
}

static void read_invoice(void *ud, sql_rows *r)
{
    json_error_t je;
    json_t *lines = json_loads(sql_text(r, 10), 0, &je);
    *(json_t **)ud = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:o, s:s}", "id", sql_text(r, 0),
                               "number", sql_text(r, 1), "kind", sql_text(r, 2), "order_id", sql_text(r, 3),
                               "buyer_id", sql_text(r, 4), "currency", sql_text(r, 5), "subtotal_cents",
                               (json_int_t)sql_int(r, 6), "tax_rate_bp", (json_int_t)sql_int(r, 7), "tax_cents",
                               (json_int_t)sql_int(r, 8), "total_cents", (json_int_t)sql_int(r, 9), "lines",
                               lines ? lines : json_array(), "issued_at", sql_text(r, 11));
}

int invoice_load(sql_tx *tx, const char *id, json_t **out, pl_error *err)
{
    *out = NULL;
    int rc = sql_one(tx,
                     "SELECT id, number, kind, order_id, buyer_id, currency, subtotal_cents, tax_rate_bp, tax_cents,"
                     " total_cents, lines, issued_at FROM commerce_invoices WHERE id = $1",
                     SQL_ARGS(SQL_TEXT(id)), read_invoice, out, err);
    return rc < 0 ? rc : 0;
}

char *html_escape(const char *s)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += strchr("<>&\"'", *p) ? 6 : 1;
    char *o = malloc(n), *w = o;
    if (!o)
        abort();
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '<': w = stpcpy(w, "&lt;"); break;
        case '>': w = stpcpy(w, "&gt;"); break;
        case '&': w = stpcpy(w, "&amp;"); break;
        case '"': w = stpcpy(w, "&quot;"); break;
        case '\'': w = stpcpy(w, "&#39;"); break;
        default: *w++ = *p;
        }
    }
    *w = '\0';
    return o;
}

/* "12.34" from minor units (two decimals; every currency we sell in has two). */
static void money(int64_t cents, char *out, size_t size)
{
    int64_t a = cents < 0 ? -cents : cents;
    snprintf(out, size, "%s%lld.%02lld", cents < 0 ? "-" : "", (long long)(a / 100), (long long)(a % 100));
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0)
            return;
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int64_t jint(const json_t *o, const char *k) { return (int64_t)json_integer_value(json_object_get(o, k)); }

char *invoice_html(const json_t *inv)
{
    sbuf b = {0};
    bool credit = strcmp(jstr(inv, "kind"), "credit_note") == 0;
    char *number = html_escape(jstr(inv, "number")), *cur = html_escape(jstr(inv, "currency"));
    char *order = html_escape(jstr(inv, "order_id")), *buyer = html_escape(jstr(inv, "buyer_id"));
    char *issued = html_escape(jstr(inv, "issued_at"));
    char sub[32], tax[32], total[32];
    money(jint(inv, "subtotal_cents"), sub, sizeof sub);
    money(jint(inv, "tax_cents"), tax, sizeof tax);
    money(jint(inv, "total_cents"), total, sizeof total);
    int64_t bp = jint(inv, "tax_rate_bp");
    sb_printf(&b,
              "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>%s %s</title>\n"
              "<style>body{font-family:sans-serif;max-width:48em;margin:2em auto}table{width:100%%;"
              "border-collapse:collapse}td,th{border-bottom:1px solid #ccc;padding:.4em;text-align:left}"
              ".n{text-align:right}@media print{a{display:none}}</style></head><body>\n"
              "<h1>PulseLearn Campus Hub &mdash; %s %s</h1>\n"
              "<p>Issued: %s<br>Order: %s<br>Buyer: %s</p>\n"
              "<table><thead><tr><th>Item</th><th class=\"n\">Qty</th><th class=\"n\">Net</th>"
              "<th class=\"n\">Tax</th><th class=\"n\">Total</th></tr></thead><tbody>\n",
              credit ? "Credit note" : "Invoice", number, credit ? "Credit note" : "Invoice", number, issued, order,
              buyer);
    const json_t *lines = json_object_get(inv, "lines");
    size_t i;
    const json_t *l;
    json_array_foreach(lines, i, l)
    {
        char *d = html_escape(jstr(l, "description"));
        char ln[32], lt[32], lo[32];
        money(jint(l, "net_cents"), ln, sizeof ln);
        money(jint(l, "tax_cents"), lt, sizeof lt);
        money(jint(l, "total_cents"), lo, sizeof lo);
        sb_printf(&b,
                  "<tr><td>%s</td><td class=\"n\">%lld</td><td class=\"n\">%s %s</td><td class=\"n\">%s %s</td>"
                  "<td class=\"n\">%s %s</td></tr>\n",
                  d, (long long)jint(l, "quantity"), ln, cur, lt, cur, lo, cur);
        free(d);
    }
    sb_printf(&b,
              "</tbody><tfoot><tr><td colspan=\"4\">Subtotal</td><td class=\"n\">%s %s</td></tr>\n"
              "<tr><td colspan=\"4\">Tax (%lld.%02lld %%)</td><td class=\"n\">%s %s</td></tr>\n"
              "<tr><th colspan=\"4\">Total</th><th class=\"n\">%s %s</th></tr></tfoot></table>\n</body></html>\n",
              sub, cur, (long long)(bp / 100), (long long)(bp % 100), tax, cur, total, cur);
    free(number);
    free(cur);
    free(order);
    free(buyer);
    free(issued);
    return b.p;
}
