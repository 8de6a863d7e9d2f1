/* commerce_invoice.c - invoice numbers, tax math and HTML escaping
 * (src/services/commerce/invoice.c), and gapless numbering on a real SQLite store. */
#include "services/commerce/invoice.h"
#include "core/timeutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

Test(commerce_invoice, tax_rounds_half_up_in_integers)
{
    cr_assert_eq(invoice_tax_cents(0, 2000), 0);
    cr_assert_eq(invoice_tax_cents(4900, 0), 0);
    cr_assert_eq(invoice_tax_cents(4900, 2000), 980);
    cr_assert_eq(invoice_tax_cents(1, 2000), 0);     /* 0.2 -> 0 */
    cr_assert_eq(invoice_tax_cents(3, 2000), 1);     /* 0.6 -> 1 */
    cr_assert_eq(invoice_tax_cents(25, 2000), 5);    /* 5.0 */
    cr_assert_eq(invoice_tax_cents(5, 1000), 1);     /* 0.5 -> 1 (half up) */
    cr_assert_eq(invoice_tax_cents(15, 1000), 2);    /* 1.5 -> 2 */
    cr_assert_eq(invoice_tax_cents(14, 1000), 1);    /* 1.4 -> 1 */
    cr_assert_eq(invoice_tax_cents(999, 1900), 190); /* 189.81 -> 190 */
    cr_assert_eq(invoice_tax_cents(1000, 10000), 1000);
    /* a credit note's tax is exactly minus the invoice's */
    for (int64_t n = 0; n < 2000; n += 7)
        cr_assert_eq(invoice_tax_cents(-n, 1950), -invoice_tax_cents(n, 1950), "n=%lld", (long long)n);
    /* no overflow at the largest price courses accept (100,000,000 cents) */
    cr_assert_eq(invoice_tax_cents(100000000, 10000), 100000000);
}

Test(commerce_invoice, numbers)
{
    char b[32];
    invoice_format_number("invoice", 2026, 1, b, sizeof b);
    cr_assert_str_eq(b, "2026-000001");
    invoice_format_number("invoice", 2026, 123456, b, sizeof b);
    cr_assert_str_eq(b, "2026-123456");
    invoice_format_number("invoice", 2027, 1234567, b, sizeof b);
    cr_assert_str_eq(b, "2027-1234567");
    invoice_format_number("credit_note", 2026, 42, b, sizeof b);
    cr_assert_str_eq(b, "CN-2026-000042");
}

Test(commerce_invoice, html_escapes_everything_user_provided)
{
    char *e = html_escape("<script>alert('x')</script> & \"q\"");
    cr_assert_str_eq(e, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
    free(e);
    json_t *inv = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:[{s:s, s:i, s:I, s:I, s:I}], s:s}",
                            "id", "i", "number", "2026-000001", "kind", "invoice", "order_id", "<o>", "buyer_id", "<b>",
                            "currency", "EUR", "subtotal_cents", (json_int_t)4900, "tax_rate_bp", (json_int_t)2000,
                            "tax_cents", (json_int_t)980, "total_cents", (json_int_t)5880, "lines", "description",
                            "<img src=x onerror=alert(1)>", "quantity", 1, "net_cents", (json_int_t)4900, "tax_cents",
                            (json_int_t)980, "total_cents", (json_int_t)5880, "issued_at", "2026-11-22T00:00:00.000Z");
    char *page = invoice_html(inv);
    cr_assert_null(strstr(page, "<img"));
    cr_assert_null(strstr(page, "<o>"));
    cr_assert_not_null(strstr(page, "&lt;img src=x onerror=alert(1)&gt;"));
    cr_assert_not_null(strstr(page, "58.80 EUR"));
    cr_assert_not_null(strstr(page, "Tax (20.00 %)"));
    free(page);
    json_decref(inv);
}

/* Issues invoices on a real SQLite store: a rolled-back issue gives its number back. */
Test(commerce_invoice, gapless_across_rollbacks)
{
    char dir[] = "/tmp/pulse-invoice-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    sql_options o = {.data_dir = dir, .service = "commerce"};
    sql_db *db;
    pl_error err = {0};
    cr_assert_eq(sql_open("", &o, &db, &err), 0, "%s", err.msg);
    size_t n = 0;
    for (size_t i = 0; i < sql_builtin_nmigrations; i++)
        n += strcmp(sql_builtin_migrations[i].service, "commerce") == 0;
    cr_assert_gt(n, 0);
    cr_assert_geq(sql_migrate(db, "commerce", sql_builtin_migrations, sql_builtin_nmigrations, &err), 0, "%s",
                  err.msg);
    int64_t now = 1795305600000LL; /* 2026-11-22 */
    char id[40], num[32];
    const char *expect[] = {"2026-000001", "2026-000002", "2026-000002", "2026-000003"};
    for (int i = 0; i < 4; i++) {
        sql_tx *tx;
        cr_assert_eq(sql_begin(db, SQL_TX_WRITE, &tx, &err), 0);
        char order[16];
        snprintf(order, sizeof order, "o%d", i);
        invoice_input in = {.kind = "invoice", .order_id = order, .buyer_id = "b", .currency = "EUR",
                            .description = "c", .net_cents = 100, .tax_cents = 20, .tax_rate_bp = 2000,
                            .now_ms = now};
        cr_assert_eq(invoice_issue(tx, &in, id, num, &err), 0, "%s", err.msg);
        cr_assert_str_eq(num, expect[i]);
        if (i == 1)
            sql_rollback(tx); /* its number must be reused */
        else
            cr_assert_eq(sql_commit(tx, &err), 0);
    }
    /* a new year starts again at 1; credit notes count on their own */
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_WRITE, &tx, &err), 0);
    invoice_input next = {.kind = "invoice", .order_id = "y", .buyer_id = "b", .currency = "EUR", .description = "c",
                          .net_cents = 100, .now_ms = now + 60LL * 86400000};
    cr_assert_eq(invoice_issue(tx, &next, id, num, &err), 0);
    cr_assert_str_eq(num, "2027-000001");
    invoice_input cn = {.kind = "credit_note", .order_id = "o0", .buyer_id = "b", .currency = "EUR",
                        .description = "c", .net_cents = -100, .now_ms = now};
    cr_assert_eq(invoice_issue(tx, &cn, id, num, &err), 0);
    cr_assert_str_eq(num, "CN-2026-000001");
    json_t *j = NULL;
    cr_assert_eq(invoice_load(tx, id, &j, &err), 0);
    cr_assert_not_null(j);
    cr_assert_eq(json_integer_value(json_object_get(j, "total_cents")), -100);
    json_decref(j);
    cr_assert_eq(sql_commit(tx, &err), 0);
    sql_close(db);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
