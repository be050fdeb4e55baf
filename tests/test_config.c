/* tests/test_config.c — nat-train's configs (train/train.h, section config): defaults, the INI round trip, strict errors
 * with file and line (unknown section and key, bad and out-of-range values, duplicates, syntax, a missing
 * file), --set overrides, resolution against the model variant, the shipped configs, and that
 * docs/configs.md documents every key. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/harness.h"
#include "train/train.h"

static char tmp_path[64];

/* Writes text to a fresh temporary file; returns its path. */
static const char *write_cfg(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/nat_test_cfg_XXXXXX");
    int fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return tmp_path;
}

/* Loads text from a file and expects NAT_ERR_FORMAT with "<path>:<line>:" and `what` in the message. */
static void expect_line_error(const char *text, int line, const char *what)
{
    nat_config c;
    nat_config_defaults(&c);
    const char *p = write_cfg(text);
    char where[96];
    snprintf(where, sizeof where, "%s:%d:", p, line);
    th_expect_error(nat_config_load(&c, p), NAT_ERR_FORMAT, where, what);
    unlink(p);
}

/* A file of the repository: NAT_TEST_DATA is tests/data (ctest sets it), else next to this source. */
static void repo_path(char *buf, size_t cap, const char *rel)
{
    const char *d = getenv("NAT_TEST_DATA");
    if (d) {
        snprintf(buf, cap, "%s/../../%s", d, rel);
        return;
    }
    const char *slash = strrchr(__FILE__, '/');
    snprintf(buf, cap, "%.*s/../%s", slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".", rel);
}

START_TEST(defaults_round_trip)
{
    nat_config a, b;
    nat_config_defaults(&a);
    ck_assert_str_eq(a.model.variant, "nat_mini");
    ck_assert_int_eq(a.train.batch_size, 128);
    ck_assert_int_eq(a.model.patch_stride, 4);
    ck_assert(a.model.qkv_bias);
    ck_assert_float_eq(a.optim.lr, 1e-3f);
    ck_assert_float_eq(a.aug.label_smoothing, 0.1f);
    /* Every default parses as a value of its key (the table is its own check). */
    for (int i = 0; i < nat_config_key_count(); i++) {
        nat_config_key_info k = nat_config_key(i);
        char set[256];
        snprintf(set, sizeof set, "%s.%s=%s", k.section, k.key, k.default_text);
        if (strcmp(k.key, "root") && strcmp(k.key, "mean") && strcmp(k.key, "std") && strcmp(k.key, "dir") &&
            strcmp(k.key, "name") && strcmp(k.key, "dilations"))
            TH_OK(nat_config_set(&a, set));
    }
    TH_OK(nat_config_set(&a, "optim.lr = 2.5e-4"));
    TH_OK(nat_config_set(&a, "model.depths=2,3"));
    TH_OK(nat_config_set(&a, "data.mean=0.5,0.25"));
    TH_OK(nat_config_set(&a, "train.seed=18446744073709551615"));
    char *text = nat_config_to_string(&a);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "[optim]\n"));
    ck_assert_ptr_nonnull(strstr(text, "lr = 0.00025\n"));
    nat_config_defaults(&b);
    TH_OK(nat_config_parse_string(&b, text, "round-trip"));
    ck_assert_int_eq(nat_config_diff(&a, &b, NULL), 0);
    ck_assert_int_eq(b.model.depths.n, 2);
    ck_assert_int_eq(b.data.mean.n, 2);
    ck_assert(b.train.seed == UINT64_MAX);
    free(text);
    nat_config_defaults(&b);
    ck_assert_int_eq(nat_config_diff(&a, &b, NULL), 4);
}
END_TEST

START_TEST(errors_name_file_and_line)
{
    expect_line_error("[optim]\nlr = 1e-3\nlr_sheduler = cosine\n", 3, "unknown key 'lr_sheduler' in [optim]");
    expect_line_error("; comment\n\n[modle]\nembed_dim = 32\n", 3, "unknown section [modle]");
    expect_line_error("[model]\nembed_dim = 32\n[empty]\n", 3, "unknown section [empty]");
    expect_line_error("[optim]\nlr = fast\n", 2, "optim.lr: 'fast' is not a number");
    expect_line_error("[train]\n\n  ; indented comment\nepochs = 2.5\n", 4, "train.epochs: '2.5' is not an integer");
    expect_line_error("[train]\nepochs = 0\n", 2, "train.epochs: 0 is out of range [1, ");
    expect_line_error("[model]\ndrop_path = 1\n", 2, "out of range [0, 1)");
    expect_line_error("[model]\npatch_stride = 3\n", 2, "3 is not one of 4|2");
    expect_line_error("[optim]\nname = lamb\n", 2, "'lamb' is not one of adamw|sgd");
    expect_line_error("[train]\nema = maybe\n", 2, "'maybe' is not a boolean");
    expect_line_error("[model]\ndepths = 1,2,3,4,5\n", 2, "more than 4 values");
    expect_line_error("[model]\nheads = 1,x\n", 2, "'x' is not an integer");
    expect_line_error("[train]\nepochs = 3\nbatch_size = 64\nepochs = 4\n", 4, "train.epochs is set twice");
    expect_line_error("[train]\nepochs = 3\nthis line has no equals sign\n", 3, "syntax error");
    expect_line_error("epochs = 3\n", 1, "'epochs' is outside any [section]");

    nat_config c;
    nat_config_defaults(&c);
    th_expect_error(nat_config_load(&c, "/nonexistent/nat.cfg"), NAT_ERR_IO, "/nonexistent/nat.cfg", "cannot open");
    th_expect_error(nat_config_set(&c, "optim.lr"), NAT_ERR_FORMAT, "--set optim.lr", "section.key=value");
    th_expect_error(nat_config_set(&c, "optim.learning_rate=1"), NAT_ERR_FORMAT, "--set optim.learning_rate=1",
                    "unknown key 'learning_rate' in [optim]");
    th_expect_error(nat_config_set(&c, "optimizer.lr=1"), NAT_ERR_FORMAT, "unknown section [optimizer]", NULL);
    th_expect_error(nat_config_set(&c, "train.batch_size=-1"), NAT_ERR_FORMAT, "train.batch_size: -1 is out of range", NULL);
    /* A good override sets the value; a later file value would not undo the check of a bad one. */
    TH_OK(nat_config_set(&c, " train.batch_size = 32 "));
    ck_assert_int_eq(c.train.batch_size, 32);
}
END_TEST

START_TEST(resolve_from_variant)
{
    nat_config c;
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[model]\nvariant = nat_small\nembed_dim = 48\n", "x.cfg"));
    TH_OK(nat_config_resolve(&c));
    ck_assert_int_eq(c.model.embed_dim, 48); /* given */
    ck_assert_int_eq(c.model.depths.n, 4);   /* nat_small's */
    ck_assert_int_eq(c.model.depths.v[2], 18);
    ck_assert_int_eq(c.model.heads.v[0], 3);
    ck_assert_float_eq(c.model.mlp_ratio, 2.0f);
    ck_assert_float_eq(c.model.layer_scale, 1e-5f);
    ck_assert_str_eq(c.model.name, "nat_small");
    ck_assert_str_eq(c.data.root, "/usr/share/datasets/fashion-mnist");
    nat_model_desc d;
    TH_OK(nat_config_model_desc(&c, 3, 100, 32, &d));
    ck_assert_int_eq(d.embed_dim, 48);
    ck_assert_int_eq(d.num_classes, 100);
    ck_assert_int_eq(d.num_levels, 4);

    /* DiNAT variants bring their dilations; fewer levels cut the variant's heads. */
    nat_config_defaults(&c);
    TH_OK(nat_config_set(&c, "model.variant=dinat_mini"));
    TH_OK(nat_config_resolve(&c));
    ck_assert_str_eq(c.model.dilations, "1,8,1/1,4,1,4/1,2,1,2,1,2/1,1,1,1,1");
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[model]\ndepths = 2,2\ndilations = 1,2/1,1\npatch_stride = 2\n", "y.cfg"));
    TH_OK(nat_config_resolve(&c));
    ck_assert_int_eq(c.model.heads.n, 2);
    TH_OK(nat_config_model_desc(&c, 1, 10, 28, &d));
    ck_assert_int_eq(d.num_levels, 2);
    ck_assert_int_eq(d.patch_stride, 2);
    ck_assert_int_eq(nat_model_desc_dilation(&d, 0, 1), 2);

    /* Cross-key errors name the keys and the file. */
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[model]\ndepths = 2,2\nheads = 1,2,4\n", "z.cfg"));
    th_expect_error(nat_config_resolve(&c), NAT_ERR_FORMAT, "z.cfg", "model.heads has 3 value(s) but model.depths has 2");
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[model]\ndepths = 2,2\ndilations = 1,2/1\n", "z.cfg"));
    th_expect_error(nat_config_resolve(&c), NAT_ERR_FORMAT, "model.dilations '1,2/1'", NULL);
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[model]\nembed_dim = 30\nheads = 4,8,16,32\n", "z.cfg"));
    th_expect_error(nat_config_resolve(&c), NAT_ERR_INVALID_ARG, "z.cfg", "do not divide");
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[data]\nformat = folder\n", "in.cfg"));
    th_expect_error(nat_config_resolve(&c), NAT_ERR_INVALID_ARG, "in.cfg: data.root is not set", "--set data.root=");
}
END_TEST

/* Every shipped config parses and resolves; the ImageNet ones only once data.root is given. */
START_TEST(shipped_configs)
{
    static const char *const files[] = {"configs/nat_mini.cfg",          "configs/nat_mini_long.cfg",
                                        "configs/nat_fmnist_best.cfg",
                                        "configs/imagenet/nat_mini.cfg", "configs/imagenet/nat_tiny.cfg",
                                        "configs/imagenet/nat_small.cfg", "configs/imagenet/nat_base.cfg"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[512];
        repo_path(p, sizeof p, files[i]);
        nat_config c;
        nat_config_defaults(&c);
        TH_OK(nat_config_load(&c, p));
        if (strstr(files[i], "imagenet")) {
            th_expect_error(nat_config_resolve(&c), NAT_ERR_INVALID_ARG, "data.root is not set", NULL);
            TH_OK(nat_config_set(&c, "data.root=/data/imagenet"));
            TH_OK(nat_config_resolve(&c));
            nat_model_desc d, v;
            TH_OK(nat_config_model_desc(&c, 3, 1000, c.data.img_size, &d));
            TH_OK(nat_model_desc_variant(&v, c.model.variant, 1000, 3));
            nat_model_counts cd, cv;
            TH_OK(nat_model_desc_count(&d, 224, 224, &cd));
            TH_OK(nat_model_desc_count(&v, 224, 224, &cv));
            ck_assert_msg(cd.params == cv.params && cd.macs == cv.macs, "%s is not the paper's %s", files[i], c.model.variant);
            ck_assert_int_eq(c.data.img_size, 224);
        } else {
            TH_OK(nat_config_resolve(&c));
        }
    }
}
END_TEST

START_TEST(docs_list_every_key)
{
    char p[512];
    repo_path(p, sizeof p, "docs/configs.md");
    FILE *f = fopen(p, "r");
    ck_assert_msg(f != NULL, "cannot open %s", p);
    static char doc[1 << 16];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
    for (int i = 0; i < nat_config_key_count(); i++) {
        nat_config_key_info k = nat_config_key(i);
        char row[96], sec[32];
        snprintf(sec, sizeof sec, "## [%s]", k.section);
        if (k.default_text[0])
            snprintf(row, sizeof row, "| `%s` | `%s` |", k.key, k.default_text);
        else
            snprintf(row, sizeof row, "| `%s` | |", k.key);
        const char *at = strstr(doc, sec);
        ck_assert_msg(at != NULL, "docs/configs.md has no section heading '%s'", sec);
        const char *next = strstr(at + 1, "\n## ");
        const char *hit = strstr(at, row);
        ck_assert_msg(hit && (!next || hit < next), "docs/configs.md: no row '%s' under %s", row, sec);
    }
}
END_TEST

/* inih reads at most INI_MAX_LINE (200) bytes per line and parsed the rest of a longer line as a new
 * line, so a long comment could set a key; a NUL byte ended the file silently. */
START_TEST(long_lines_nul_and_bad_utf8)
{
    char text[2048];
    char pad[400];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = 0;
    /* 199 characters of comment, then what inih took for the next line. */
    snprintf(text, sizeof text, "[train]\n# %.*sepochs = 7\nbatch_size = 16\n", 197, pad);
    nat_config c;
    nat_config_defaults(&c);
    const char *p = write_cfg(text);
    TH_OK(nat_config_load(&c, p));
    unlink(p);
    ck_assert_msg(c.train.epochs != 7, "a comment set train.epochs = %d", c.train.epochs);
    nat_config d;
    nat_config_defaults(&d);
    ck_assert_int_eq(c.train.epochs, d.train.epochs);
    ck_assert_int_eq(c.train.batch_size, 16);

    /* A long value (a deep path) is read whole, with an inline comment after it. */
    char root[400];
    snprintf(root, sizeof root, "/data/%.*s/set", 300, pad);
    snprintf(text, sizeof text, "[data]\nformat = folder\nroot = %s ; the images\n[train]\nepochs = 3\n", root);
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, text, "long.cfg"));
    ck_assert_str_eq(c.data.root, root);
    ck_assert_int_eq(c.train.epochs, 3);
    snprintf(text, sizeof text, "[data]\nroot = %s%s\n", pad, pad); /* longer than the field: an error, not a cut */
    nat_config_defaults(&c);
    th_expect_error(nat_config_parse_string(&c, text, "long.cfg"), NAT_ERR_FORMAT, "long.cfg:2:", "data.root");

    /* A NUL byte: an error naming its line, not the end of the file. */
    static const char nul[] = "[train]\nepochs = 2\n# \0\nbatch_size = 16\n";
    snprintf(tmp_path, sizeof tmp_path, "/tmp/nat_test_cfg_XXXXXX");
    int fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, nul, sizeof nul - 1), (ssize_t)(sizeof nul - 1));
    close(fd);
    char where[96];
    snprintf(where, sizeof where, "%s:3:", tmp_path);
    nat_config_defaults(&c);
    th_expect_error(nat_config_load(&c, tmp_path), NAT_ERR_FORMAT, where, "NUL");
    unlink(tmp_path);

    /* Invalid UTF-8 (a Latin-1 byte, an overlong encoding): an error naming the line. */
    expect_line_error("[data]\nformat = folder\nroot = /data/caf\xe9\n", 3, "UTF-8");
    expect_line_error("[train]\n# \xc0\xaf\n", 2, "UTF-8");
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[data]\n# caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n", "utf8.cfg"));

    /* A directory given as the config: say so. */
    nat_config_defaults(&c);
    th_expect_error(nat_config_load(&c, "/tmp"), NAT_ERR_IO, "/tmp", "is a directory");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"defaults_round_trip", defaults_round_trip}, {"errors_name_file_and_line", errors_name_file_and_line},
        {"resolve_from_variant", resolve_from_variant}, {"shipped_configs", shipped_configs},
        {"docs_list_every_key", docs_list_every_key}, {"long_lines_nul_and_bad_utf8", long_lines_nul_and_bad_utf8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        tcase_set_timeout(tc, 30);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
