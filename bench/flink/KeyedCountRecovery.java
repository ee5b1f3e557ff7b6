/*
 * KeyedCountRecovery: the Flink 2.x twin of `floe bench recovery` (issue 24).
 *
 *   fromSource(NumberSequenceSource 0..N-1, one split per subtask), N = K·(1+1000·P)
 *     i -> (i % K, 1)
 *     keyBy(key)
 *     KeyedProcessFunction: ValueState<Long> count += 1
 *     DiscardingSink
 *
 * Two phases, each one JVM started by the shared harness:
 *
 *   run      (default) With N = K·(1+1000·P), split j starts at key j·K/P, so once
 *            every split has read K/P records every key has state. The first
 *            checkpoint whose barrier left every split after that point holds
 *            all K keys; when it completes, the JVM prints one JSON line (the
 *            checkpoint's path, records/s so far) and halts at once
 *            (Runtime.halt: no shutdown hooks, no cancel, no cleanup; what a
 *            SIGKILL leaves).
 *   restore  (--restore-from <chk-n path>) The same job with
 *            execution.state-recovery.path set. Prints the time from the JVM's
 *            start (and from the job's submission) to the first record the
 *            keyed function processes, then halts.
 *
 * Run from the project root:
 *
 *   JOB_SRC=bench/flink/KeyedCountRecovery.java ../shared/bench/flink/run.sh \
 *       --keys 10000000 --parallelism 2 --backend rocksdb --incremental true \
 *       --checkpoint-interval-ms 10000 --checkpoint-dir file:///tmp/flink-recovery
 *   JOB_SRC=… run.sh … --restore-from file:///tmp/flink-recovery/<job>/chk-<n>
 */

import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.state.CheckpointListener;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.lib.NumberSequenceSource;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.graph.StreamGraph;
import org.apache.flink.util.Collector;

import java.lang.management.ManagementFactory;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;

public class KeyedCountRecovery {

    // The MiniCluster runs in this JVM: task threads and main() share these.
    static volatile long keys;
    static volatile int parallelism;
    static volatile String checkpointDir;
    static volatile JobID jobId;
    static volatile long firstRecordNs = 0;
    static final AtomicLong FIRST_MS = new AtomicLong(Long.MAX_VALUE);
    /** Whether the first record's key already had a count (restored state). */
    static volatile boolean firstHadState;
    static final AtomicLong PROCESSED = new AtomicLong();
    /** Records each split has read (by the map subtask chained to it). */
    static AtomicLongArray perSplit;
    /** The first checkpoint each map subtask snapshotted past its cover point. */
    static AtomicLongArray coveredFrom;

    /** Counts the records of its split and notes the first covering checkpoint. */
    public static class CountSplit extends RichMapFunction<Long, Tuple2<Long, Long>>
            implements CheckpointedFunction, CheckpointListener {
        transient int index;
        transient long seen;

        @Override
        public void open(OpenContext ctx) {
            index = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
        }

        @Override
        public Tuple2<Long, Long> map(Long i) {
            if ((++seen & 1023) == 0) perSplit.set(index, seen);
            return Tuple2.of(i % keys, 1L);
        }

        @Override
        public void snapshotState(FunctionSnapshotContext ctx) {
            perSplit.set(index, seen);
            long cover = (keys + parallelism - 1) / parallelism + parallelism;
            if (seen >= cover) coveredFrom.compareAndSet(index, Long.MAX_VALUE, ctx.getCheckpointId());
        }

        @Override
        public void initializeState(FunctionInitializationContext ctx) {}

        @Override
        public void notifyCheckpointComplete(long checkpointId) {
            long covering = 0;
            for (int j = 0; j < parallelism; j++) covering = Math.max(covering, coveredFrom.get(j));
            if (covering == Long.MAX_VALUE || checkpointId < covering) return;
            long total = 0;
            for (int j = 0; j < parallelism; j++) total += perSplit.get(j);
            double seconds = (System.nanoTime() - firstRecordNs) / 1e9;
            String path = checkpointDir.replaceAll("/+$", "") + "/" + jobId + "/chk-" + checkpointId;
            System.out.println(String.format(Locale.ROOT,
                    "{\"engine\":\"flink\",\"job\":\"keyed_count_recovery\",\"phase\":\"run\",\"keys\":%d,"
                            + "\"parallelism\":%d,\"checkpoint_id\":%d,\"checkpoint_path\":\"%s\","
                            + "\"records_before_kill\":%d,\"records_per_sec\":%d}",
                    keys, parallelism, checkpointId, path, total, Math.round(total / seconds)));
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }
    }

    /** The running count; notes when the first record arrives. */
    public static class Count extends KeyedProcessFunction<Long, Tuple2<Long, Long>, Void> {
        private transient ValueState<Long> count;
        transient boolean started;

        @Override
        public void open(OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(Tuple2<Long, Long> in, Context ctx, Collector<Void> out)
                throws Exception {
            Long c = count.value();
            count.update(c == null ? in.f1 : c + in.f1);
            if (!started) {
                started = true;
                if (c != null) firstHadState = true;
                FIRST_MS.accumulateAndGet(System.currentTimeMillis(), Math::min);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        long k = 10_000_000L, intervalMs = 10_000L;
        int p = 2;
        String backend = "rocksdb", ckptDir = "file:///tmp/flink-recovery", restoreFrom = null;
        Boolean incremental = null;
        Map<String, String> extra = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--keys": k = Long.parseLong(v.replace("_", "")); i++; break;
                case "--parallelism": p = Integer.parseInt(v); i++; break;
                case "--backend": backend = v.toLowerCase(Locale.ROOT); i++; break;
                case "--incremental": incremental = Boolean.parseBoolean(v); i++; break;
                case "--checkpoint-interval-ms": intervalMs = Long.parseLong(v); i++; break;
                case "--checkpoint-dir": ckptDir = v; i++; break;
                case "--restore-from": restoreFrom = v; i++; break;
                case "--conf": {
                    int eq = v.indexOf('=');
                    if (eq <= 0) throw new IllegalArgumentException("--conf expects key=value: " + v);
                    extra.put(v.substring(0, eq), v.substring(eq + 1));
                    i++;
                    break;
                }
                default: throw new IllegalArgumentException("unknown argument: " + args[i]);
            }
        }
        if (incremental == null) incremental = !backend.equals("hashmap");
        keys = k;
        parallelism = p;
        checkpointDir = ckptDir;
        perSplit = new AtomicLongArray(p);
        coveredFrom = new AtomicLongArray(p);
        for (int j = 0; j < p; j++) coveredFrom.set(j, Long.MAX_VALUE);
        // Split j starts at key j·K/P; the job never reaches its end.
        final long records = k * (1 + 1000L * p);

        Map<String, String> c = new LinkedHashMap<>();
        c.put("parallelism.default", Integer.toString(p));
        c.put("state.backend.type", backend);
        c.put("execution.checkpointing.incremental", incremental.toString());
        c.put("execution.checkpointing.dir", ckptDir);
        c.put("execution.checkpointing.storage", "filesystem");
        c.put("execution.checkpointing.interval", intervalMs + " ms");
        c.put("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION");
        if (restoreFrom != null) c.put("execution.state-recovery.path", restoreFrom);
        c.put("restart-strategy.type", "none");
        c.put("rest.address", "127.0.0.1");
        c.put("rest.bind-address", "127.0.0.1");
        c.put("rest.bind-port", "0");
        c.put("jobmanager.rpc.address", "127.0.0.1");
        c.put("jobmanager.bind-host", "127.0.0.1");
        c.put("taskmanager.host", "127.0.0.1");
        c.put("taskmanager.bind-host", "127.0.0.1");
        c.putAll(extra);
        Configuration conf = Configuration.fromMap(c);

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(p);
        env.fromSource(new NumberSequenceSource(0, records - 1), WatermarkStrategy.noWatermarks(), "sequence")
                .uid("sequence")
                .map(new CountSplit())
                .uid("split-count")
                .returns(Types.TUPLE(Types.LONG, Types.LONG))
                .keyBy(t -> t.f0, Types.LONG)
                .process(new Count())
                .uid("count")
                .sinkTo(new DiscardingSink<>());
        StreamGraph graph = env.getStreamGraph();
        graph.setJobName("flinkbench-keyed-count-recovery");

        MiniClusterConfiguration mcc = new MiniClusterConfiguration.Builder()
                .setConfiguration(conf)
                .setNumTaskManagers(1)
                .setNumSlotsPerTaskManager(p)
                .setCommonBindAddress("127.0.0.1")
                .build();
        long jvmStartMs = ManagementFactory.getRuntimeMXBean().getStartTime();
        MiniCluster mc = new MiniCluster(mcc);
        mc.start();
        jobId = new JobID();
        JobGraph jobGraph = graph.getJobGraph(KeyedCountRecovery.class.getClassLoader(), jobId);
        long submitMs = System.currentTimeMillis();
        firstRecordNs = System.nanoTime();
        mc.submitJob(jobGraph).get();
        if (restoreFrom == null) {
            // The covering checkpoint's notification halts the JVM.
            mc.requestJobResult(jobId).get();
            throw new IllegalStateException("the job ended before a checkpoint covered every key");
        }
        while (FIRST_MS.get() == Long.MAX_VALUE) Thread.sleep(1);
        long first = FIRST_MS.get();
        System.out.println(String.format(Locale.ROOT,
                "{\"engine\":\"flink\",\"job\":\"keyed_count_recovery\",\"phase\":\"restore\",\"keys\":%d,"
                        + "\"parallelism\":%d,\"backend\":\"%s\",\"incremental\":%b,\"restored\":\"%s\","
                        + "\"jvm_start_to_submit_seconds\":%.3f,\"submit_to_first_record_seconds\":%.3f,"
                        + "\"recovery_seconds\":%.3f,\"first_key_had_state\":%b}",
                k, p, backend, incremental, restoreFrom, (submitMs - jvmStartMs) / 1e3,
                (first - submitMs) / 1e3, (first - jvmStartMs) / 1e3, firstHadState));
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
