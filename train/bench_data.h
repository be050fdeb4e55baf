/* train/bench_data.h — nat-bench data: images/s of the data loader (see `nat-bench data --help`). */
#ifndef NAT_TRAIN_BENCH_DATA_H
#define NAT_TRAIN_BENCH_DATA_H

/* argv[0] is the benchmark's name ("data"); returns 0, or non-zero after printing what was wrong. */
int nat_bench_data(int argc, char **argv);

#endif
