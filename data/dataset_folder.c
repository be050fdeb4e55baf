/* data/dataset_folder.c — an image folder (root/<class>/.../<name>.{jpg,jpeg,png}) as a nat_dataset.
 *
 * Opening only lists and sorts paths (torchvision ImageFolder's order: class folders in byte order;
 * inside a class, the folder's own files sorted, then its sub-folders in order, recursively). Decoding
 * happens in get, on whichever thread calls it, through nat_image_load (data/image.c), which nat-classify
 * uses too, so a file is read the same way whether it sits in a folder or is named on a command line. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "core/check.h"

#define FOLDER_MAX_DEPTH 32

typedef struct folder_set {
    char **paths;
    int32_t *labels;
    int64_t count, cap;
    int channels;
} folder_set;

typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list;

static void folder_free(void *user)
{
    folder_set *s = user;
    for (int64_t i = 0; i < s->count; i++)
        free(s->paths[i]);
    free(s->paths);
    free(s->labels);
    free(s);
}

static void names_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool has_image_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static nat_status push_name(name_list *l, char *s)
{
    if (!s)
        return nat_error(NAT_ERR_OOM, "image folder: no memory for paths");
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(s);
            return nat_error(NAT_ERR_OOM, "image folder: no memory for paths");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return NAT_OK;
}

/* The sorted full paths of dir's non-hidden entries, split into sub-folders and image files. */
static nat_status list_dir(const char *dir, name_list *dirs, name_list *files)
{
    DIR *d = opendir(dir);
    if (!d)
        return nat_error(NAT_ERR_IO, "image folder %s: cannot open: %s", dir, strerror(errno));
    nat_status s = NAT_OK;
    struct dirent *e;
    while (s == NAT_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *path = join(dir, e->d_name);
        struct stat st;
        if (!path) {
            s = nat_error(NAT_ERR_OOM, "image folder: no memory for paths");
        } else if (stat(path, &st) != 0) {
            free(path); /* a dangling link: not an image we could read */
        } else if (S_ISDIR(st.st_mode) && dirs) {
            s = push_name(dirs, path);
        } else if (S_ISREG(st.st_mode) && files && has_image_ext(e->d_name)) {
            s = push_name(files, path);
        } else {
            free(path);
        }
    }
    closedir(d);
    if (dirs && dirs->n)
        qsort(dirs->v, dirs->n, sizeof *dirs->v, cmp_str);
    if (files && files->n)
        qsort(files->v, files->n, sizeof *files->v, cmp_str);
    return s;
}

static nat_status add_sample(folder_set *s, char *path, int32_t label)
{
    if (s->count == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 256;
        char **p = realloc(s->paths, (size_t)cap * sizeof *p);
        if (p)
            s->paths = p;
        int32_t *l = realloc(s->labels, (size_t)cap * sizeof *l);
        if (l)
            s->labels = l;
        if (!p || !l) {
            free(path);
            return nat_error(NAT_ERR_OOM, "image folder: no memory for %lld paths", (long long)cap);
        }
        s->cap = cap;
    }
    s->paths[s->count] = path;
    s->labels[s->count++] = label;
    return NAT_OK;
}

/* Adds every image under dir (its own files first, then its sub-folders in order) with `label`. */
static nat_status scan_class(folder_set *s, const char *dir, int32_t label, int depth)
{
    if (depth > FOLDER_MAX_DEPTH)
        return nat_error(NAT_ERR_FORMAT, "image folder %s: nested more than %d levels deep (a link loop?)", dir,
                         FOLDER_MAX_DEPTH);
    name_list dirs = {0}, files = {0};
    nat_status st = list_dir(dir, &dirs, &files);
    for (size_t i = 0; i < files.n && st == NAT_OK; i++) {
        st = add_sample(s, files.v[i], label);
        files.v[i] = NULL; /* owned by s now (or freed by add_sample) */
    }
    for (size_t i = 0; i < dirs.n && st == NAT_OK; i++)
        st = scan_class(s, dirs.v[i], label, depth + 1);
    names_free(&dirs);
    names_free(&files);
    return st;
}

static nat_status folder_get(void *user, int64_t i, nat_image *img, int32_t *label)
{
    const folder_set *s = user;
    NAT_TRY(nat_image_load(s->paths[i], s->channels, img));
    *label = s->labels[i];
    return NAT_OK;
}

nat_status nat_dataset_open_folder(const char *dir, int channels, nat_dataset **out)
{
    NAT_CHECK_ARG(dir, "nat_dataset_open_folder", "dir");
    NAT_CHECK_ARG(out, "nat_dataset_open_folder", "out");
    *out = NULL;
    if (channels != 1 && channels != 3)
        return nat_error(NAT_ERR_INVALID_ARG, "image folder %s: channels must be 1 or 3, not %d", dir, channels);
    folder_set *s = calloc(1, sizeof *s);
    if (!s)
        return nat_error(NAT_ERR_OOM, "image folder: no memory");
    s->channels = channels;
    name_list classes = {0};
    nat_status st = list_dir(dir, &classes, NULL);
    if (st == NAT_OK && classes.n == 0)
        st = nat_error(NAT_ERR_FORMAT, "image folder %s: no class sub-folders (expected %s/<class>/<image>.jpg|png)",
                       dir, dir);
    if (st == NAT_OK && classes.n > INT32_MAX)
        st = nat_error(NAT_ERR_FORMAT, "image folder %s: too many class folders", dir);
    for (size_t k = 0; k < classes.n && st == NAT_OK; k++) {
        int64_t before = s->count;
        st = scan_class(s, classes.v[k], (int32_t)k, 0);
        if (st == NAT_OK && s->count == before)
            st = nat_error(NAT_ERR_FORMAT, "image folder %s: class folder %s holds no .jpg, .jpeg or .png file", dir,
                           classes.v[k]);
    }
    if (st != NAT_OK) {
        names_free(&classes);
        folder_free(s);
        return st;
    }
    nat_dataset_desc d = {
        .count = s->count, .classes = (int)classes.n, .c = channels, .h = 0, .w = 0,
        .get = folder_get, .free = folder_free, .user = s, .name = dir,
    };
    st = nat_dataset_new(&d, out);
    if (st == NAT_OK) {
        /* class names are the folder names, not the full paths */
        const char **names = malloc(classes.n * sizeof *names);
        if (!names) {
            st = nat_error(NAT_ERR_OOM, "image folder: no memory");
        } else {
            for (size_t k = 0; k < classes.n; k++)
                names[k] = strrchr(classes.v[k], '/') + 1;
            st = nat_dataset_set_class_names(*out, (int)classes.n, names);
            free(names);
        }
        if (st != NAT_OK) {
            nat_dataset_free(*out);
            *out = NULL;
        }
    }
    names_free(&classes);
    return st;
}
