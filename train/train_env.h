/* train/train_env.h — process set-up shared by nat-train and nat-eval. */
#ifndef NAT_TRAIN_ENV_H
#define NAT_TRAIN_ENV_H

/* Makes idle OpenMP threads sleep instead of spin: unless OMP_WAIT_POLICY is set, sets it to "passive"
 * and re-executes the program (libgomp reads it only at start-up). Spinning threads cost little on an
 * idle machine, but on a shared 2-core one a spinning thread whose partner was descheduled burns its
 * core at every barrier: a training step measured 4-10x slower with another job running, and no
 * slower than one thread with passive waiting. Call first thing in main; returns when nothing was
 * done or the re-exec failed. */
void nat_train_passive_omp(char **argv);

#endif
