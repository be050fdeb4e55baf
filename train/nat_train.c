/* train/nat_train.c — nat-train: trains a NAT classifier as a config describes (train/train.h,
 * docs/configs.md, docs/training.md). Exit status: 0 done, 1 error, 2 bad command line or config,
 * 130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/dist.h"
#include "train/train.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nat-train CONFIG [--set section.key=value ...] [--resume CHECKPOINT] [--out DIR]\n"
            "       nat-train --resume CHECKPOINT [--set ...] [--out DIR]   (the checkpoint's own config)\n"
            "Trains a NAT / DiNAT classifier as the INI config describes (sections [model] [data] [aug] [optim]\n"
            "[train] [log]; docs/configs.md), printing live progress, evaluating on the test split, and writing\n"
            "checkpoints, config.cfg, train_log.csv and eval_log.csv into the run directory.\n"
            "  CONFIG                  the config file (configs/nat_mini.cfg is the main job)\n"
            "  --set section.key=value override one key after the file is read (repeatable), e.g.\n"
            "                          --set optim.lr=2e-3 --set train.epochs=3\n"
            "  --resume CHECKPOINT     continue from a checkpoint file (or a run directory: its newest\n"
            "                          checkpoint); losses continue exactly as in an uninterrupted run. Without\n"
            "                          CONFIG the checkpoint's own config is used\n"
            "  --out DIR               run directory (default: log.dir, else the resumed checkpoint's\n"
            "                          directory, else runs/<config name>-<date>-<time>). A new run refuses a\n"
            "                          directory that is not empty, and one another nat-train is using\n"
            "  --overwrite             a new run replaces the checkpoints and logs of an old run in --out\n"
            "  --dry-run               resolve the config, open the data, build the model, print the plan; no training\n"
            "  --keys                  list every config key with its default and meaning\n"
            "  --help                  this text\n"
            "Ctrl-C (SIGINT) or SIGTERM: the run stops after the current step, writes a checkpoint and exits with\n"
            "130 / 143; a second Ctrl-C aborts at once. Threads: train.threads or OMP_NUM_THREADS.\n"
            "\n"
            "Several processes, GPUs, machines (data parallel; docs/distributed.md). Each process trains its\n"
            "shard of every batch (train.batch_size is the global batch; the same samples in the same order\n"
            "whatever the number of processes), gradients are summed in rank order, rank 0 alone prints and\n"
            "writes the run directory. Set train.replicas=1; one thread per process for the bits of\n"
            "train.replicas=N.\n"
            "  one machine, N CPU processes:  mpirun -np N -x OMP_NUM_THREADS=1 nat-train CONFIG --set train.replicas=1\n"
            "  several machines:              mpirun -np N --hostfile HOSTS ... (the same paths on every host)\n"
            "  Slurm:                         srun -n N nat-train CONFIG ...  (Open MPI's PMIx)\n"
            "  without MPI (GPUs, NCCL id rendezvous over TCP): per process RANK=0..N-1, WORLD_SIZE=N,\n"
            "    LOCAL_RANK (the GPU on its machine), MASTER_ADDR (rank 0's host; 127.0.0.1),\n"
            "    MASTER_PORT (29500)\n"
            "  train.dist_timeout (300 s): a rank that does not answer for that long is named and the job\n"
            "  aborted; train.allreduce_dtype: f32 or bf16 gradients over NCCL.\n"
            "  GPUs: train.device=cuda, one process per GPU (cuda:LOCAL_RANK), gradients summed by NCCL\n"
            "  (not yet run on a GPU: docs/distributed.md). This build: MPI %s, NCCL %s.\n",
            nat_dist_have_mpi() ? "yes" : "no (install libopenmpi-dev, configure again)",
            nat_nccl_built() ? "yes" : "no (a CUDA build with libnccl)");
}

int main(int argc, char **argv)
{
    nat_train_passive_omp(argv);
    const char *config = NULL, *resume = NULL, *out = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0;
    bool dry = false, overwrite = false;
    if (!sets)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(sets);
            return 0;
        } else if (!strcmp(a, "--keys")) {
            nat_config_print_keys(stdout);
            free(sets);
            return 0;
        } else if (!strcmp(a, "--dry-run")) {
            dry = true;
        } else if (!strcmp(a, "--overwrite")) {
            overwrite = true;
        } else if (!strcmp(a, "--set") || !strcmp(a, "--resume") || !strcmp(a, "--out")) {
            if (!next) {
                fprintf(stderr, "nat-train: %s needs a value (try --help)\n", a);
                free(sets);
                return 2;
            }
            if (!strcmp(a, "--set"))
                sets[n_sets++] = next;
            else if (!strcmp(a, "--resume"))
                resume = next;
            else
                out = next;
            i++;
        } else if (!strncmp(a, "--set=", 6)) {
            sets[n_sets++] = a + 6;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "nat-train: unknown option '%s' (try --help)\n", a);
            free(sets);
            return 2;
        } else if (config) {
            fprintf(stderr, "nat-train: more than one config given ('%s' and '%s')\n", config, a);
            free(sets);
            return 2;
        } else {
            config = a;
        }
    }
    if (!config && !resume) {
        usage(stderr);
        free(sets);
        return 2;
    }

    nat_config cfg; /* filled by nat_checkpoint_config */
    nat_status s = NAT_OK;
    char path[NAT_CFG_STR + 64] = "";
    if (!config) /* the checkpoint's own config: it must hold one */
        s = nat_checkpoint_resolve(resume, path, sizeof path);
    if (s == NAT_OK)
        s = nat_checkpoint_config(&cfg, config, config ? NULL : path, true, NULL);
    if (s == NAT_OK)
        s = nat_config_set_all(&cfg, sets, n_sets);
    free(sets);
    if (s == NAT_OK)
        s = nat_config_resolve(&cfg);
    if (s != NAT_OK) {
        fprintf(stderr, "nat-train: %s\n", nat_error_message());
        return s == NAT_ERR_IO ? 1 : 2;
    }

    /* Under mpirun / srun / RANK+WORLD_SIZE: join the job (docs/distributed.md); alone otherwise. */
    nat_dist *dist;
    s = nat_dist_init(&dist, cfg.train.dist_timeout);
    if (s != NAT_OK) {
        fprintf(stderr, "nat-train: %s\n", nat_error_message());
        return 1;
    }
    nat_train_signals_install(NAT_SIGNAL_CHECKPOINT);
    nat_train_opts o = {.resume = resume, .out_dir = out, .stop = nat_train_stop_flag(), .dry_run = dry,
                        .overwrite = overwrite, .dist = nat_dist_size(dist) > 1 ? dist : NULL};
    nat_train_result res;
    s = nat_train(&cfg, &o, &res);
    if (s != NAT_OK) {
        if (nat_dist_size(dist) > 1) /* the others may be waiting for this rank: end them all, now */
            nat_dist_abort(dist, 1, nat_error_message());
        fprintf(stderr, "nat-train: %s\n", nat_error_message());
        nat_dist_free(dist);
        return 1;
    }
    nat_dist_free(dist);
    if (res.interrupted)
        return 128 + (int)*nat_train_stop_flag();
    return 0;
}
