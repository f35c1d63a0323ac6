/**
 * grpc-js prints connection trouble straight to stderr; the datastore reports it as errors of its
 * own instead. Imported before etcd3 (which loads grpc-js, which reads this once).
 */
process.env.GRPC_VERBOSITY ??= 'NONE';
