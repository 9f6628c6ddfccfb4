/* README's configuration table, from the key table (plugin/core/config_keys.h).
 *
 *   config_table                      prints the table as Markdown, to
 *                                     paste over README's
 *   config_table --check README HDR   checks README's table row for row
 *                                     against it, and that the header's
 *                                     REF: config block lists every key
 *
 * The check is a test (meson test readme-config) so that the README cannot
 * drift from the keys the plugin accepts: a row that differs is named by
 * its key and column, with both texts. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define LINE_MAX_BYTES 4096
#define COLUMNS 4

static const char *const column_names[COLUMNS] = {"key", "accepted values", "default",
                                                  "what it does"};

/* The cells of a key's row, as the README must have them. */
static void expected_cells(const rm_config_key_info *info, char cells[COLUMNS][1024])
{
    snprintf(cells[0], sizeof cells[0], "`%s`", info->name);
    snprintf(cells[1], sizeof cells[1], "%s", info->accepted);
    snprintf(cells[2], sizeof cells[2], "`%s`", info->default_value);
    snprintf(cells[3], sizeof cells[3], "%s", info->doc);
}

static void print_table(void)
{
    printf("|");
    for (int c = 0; c < COLUMNS; c++)
        printf(" %s |", column_names[c]);
    printf("\n|");
    for (int c = 0; c < COLUMNS; c++)
        printf("---|");
    printf("\n");
    rm_config_key_info info;
    for (uint32_t i = 0; rm_config_key_doc(i, true, &info); i++) {
        char cells[COLUMNS][1024];
        expected_cells(&info, cells);
        printf("|");
        for (int c = 0; c < COLUMNS; c++)
            printf(" %s |", cells[c]);
        printf("\n");
    }
}

/* Splits "| a | b |" into at most `max` trimmed cells; returns how many. */
static int split_row(char *line, char **cells, int max)
{
    size_t length = strcspn(line, "\r\n");
    line[length] = '\0';
    if (line[0] != '|')
        return 0;
    int count = 0;
    char *cell = line + 1;
    for (char *bar; (bar = strchr(cell, '|')) != NULL && count < max; cell = bar + 1) {
        *bar = '\0';
        char *start = cell, *end = bar;
        while (*start == ' ')
            start++;
        while (end > start && end[-1] == ' ')
            *--end = '\0';
        cells[count++] = start;
    }
    return count;
}

typedef struct readme_row {
    unsigned line;
    char text[LINE_MAX_BYTES];
} readme_row;

/* README's configuration table: the rows after its "| key | accepted
 * values |" header, up to the first line that is not a row. */
static int read_readme_rows(const char *path, readme_row **out, size_t *out_count)
{
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        perror(path);
        return -1;
    }
    char line[LINE_MAX_BYTES];
    unsigned number = 0;
    bool in_section = false, in_table = false, found = false;
    size_t count = 0, capacity = 32;
    readme_row *rows = calloc(capacity, sizeof *rows);
    while (rows != NULL && fgets(line, sizeof line, file) != NULL) {
        number++;
        if (strncmp(line, "## ", 3) == 0) {
            in_section = strncmp(line, "## Configuration", 16) == 0;
            in_table = false;
            continue;
        }
        if (!in_section)
            continue;
        if (!in_table) {
            in_table = strncmp(line, "| key | accepted values |", 25) == 0;
            found = found || in_table;
            continue;
        }
        if (line[0] != '|') {
            in_section = false; /* the table ended: the section's only one */
            continue;
        }
        if (strncmp(line, "|---", 4) == 0)
            continue;
        if (count == capacity) {
            readme_row *larger = realloc(rows, 2 * capacity * sizeof *rows);
            if (larger == NULL)
                break;
            rows = larger;
            capacity *= 2;
        }
        rows[count].line = number;
        snprintf(rows[count].text, sizeof rows[count].text, "%s", line);
        count++;
    }
    fclose(file);
    if (rows == NULL) {
        fprintf(stderr, "out of memory\n");
        return -1;
    }
    if (!found) {
        fprintf(stderr,
                "%s: no configuration table (a line \"| key | accepted values | ...\" under "
                "\"## Configuration\")\n",
                path);
        free(rows);
        return -1;
    }
    *out = rows;
    *out_count = count;
    return 0;
}

/* The key a README row names, without its backquotes, into `key`. */
static void row_key(const readme_row *row, char *key, size_t key_size)
{
    char copy[LINE_MAX_BYTES];
    snprintf(copy, sizeof copy, "%s", row->text);
    char *cells[COLUMNS];
    int n = split_row(copy, cells, COLUMNS);
    const char *name = n > 0 ? cells[0] : "";
    size_t length = strlen(name);
    if (length >= 2 && name[0] == '`' && name[length - 1] == '`')
        snprintf(key, key_size, "%.*s", (int)(length - 2), name + 1);
    else
        snprintf(key, key_size, "%s", name);
}

static int check_readme(const char *path)
{
    readme_row *rows;
    size_t row_count;
    if (read_readme_rows(path, &rows, &row_count) != 0)
        return 1;
    int failures = 0;
    bool *matched = calloc(row_count + 1, sizeof *matched);
    if (matched == NULL)
        return 1;
    size_t next_row = 0; /* README's rows must come in the table's order */
    rm_config_key_info info;
    const char *previous = NULL;
    for (uint32_t i = 0; rm_config_key_doc(i, true, &info); i++) {
        size_t r = 0;
        char key[256];
        for (; r < row_count; r++) {
            row_key(&rows[r], key, sizeof key);
            if (strcmp(key, info.name) == 0)
                break;
        }
        if (r == row_count) {
            fprintf(stderr, "%s: key %s: no row in the configuration table\n", path,
                    info.name);
            failures++;
            continue;
        }
        matched[r] = true;
        if (r < next_row) {
            fprintf(stderr, "%s:%u: key %s: out of order (the plugin lists it after %s)\n",
                    path, rows[r].line, info.name, previous != NULL ? previous : "none");
            failures++;
        }
        next_row = r + 1;
        previous = info.name;
        char expected[COLUMNS][1024];
        expected_cells(&info, expected);
        char copy[LINE_MAX_BYTES];
        snprintf(copy, sizeof copy, "%s", rows[r].text);
        char *cells[COLUMNS + 1];
        int n = split_row(copy, cells, COLUMNS + 1);
        if (n != COLUMNS) {
            fprintf(stderr, "%s:%u: key %s: %d columns, the table has %d\n", path,
                    rows[r].line, info.name, n, COLUMNS);
            failures++;
            continue;
        }
        for (int c = 1; c < COLUMNS; c++) {
            if (strcmp(cells[c], expected[c]) == 0)
                continue;
            fprintf(stderr,
                    "%s:%u: key %s: column \"%s\" differs\n  README: %s\n  table:  %s\n",
                    path, rows[r].line, info.name, column_names[c], cells[c], expected[c]);
            failures++;
        }
    }
    for (size_t r = 0; r < row_count; r++) {
        if (matched[r])
            continue;
        char key[256];
        row_key(&rows[r], key, sizeof key);
        fprintf(stderr, "%s:%u: key %s: not a configuration key of the plugin\n", path,
                rows[r].line, key);
        failures++;
    }
    free(matched);
    free(rows);
    return failures;
}

/* The header's REF: config block must name every key at the start of a
 * line of its list (" *   key  ..."), so that hosts reading the header
 * see them all. */
static int check_header(const char *path)
{
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        perror(path);
        return 1;
    }
    static char content[1 << 20];
    size_t size = fread(content, 1, sizeof content - 1, file);
    fclose(file);
    content[size] = '\0';
    const char *start = strstr(content, "\n * REF: config\n");
    const char *end = start != NULL ? strstr(start + 1, "\n * REF: ") : NULL;
    if (start == NULL || end == NULL) {
        fprintf(stderr, "%s: no REF: config block\n", path);
        return 1;
    }
    int failures = 0;
    rm_config_key_info info;
    for (uint32_t i = 0; rm_config_key_doc(i, false, &info); i++) {
        char pattern[256];
        snprintf(pattern, sizeof pattern, "\n *   %s ", info.name);
        const char *at = strstr(start, pattern);
        if (at == NULL || at > end) {
            fprintf(stderr, "%s: key %s: not in the REF: config block's list of keys\n", path,
                    info.name);
            failures++;
        }
    }
    return failures;
}

int main(int argc, char **argv)
{
    if (argc == 1) {
        print_table();
        return 0;
    }
    if (argc != 4 || strcmp(argv[1], "--check") != 0) {
        fprintf(stderr, "usage: %s [--check README.md rm_plugin.h]\n", argv[0]);
        return 2;
    }
    int failures = check_readme(argv[2]) + check_header(argv[3]);
    if (failures != 0) {
        fprintf(stderr,
                "%d difference(s). The keys are plugin/core/config_keys.h; `%s` prints the "
                "README table they make.\n",
                failures, argv[0]);
        return 1;
    }
    printf("README's configuration table and the header's REF: config list match the %s\n",
           "key table");
    return 0;
}
