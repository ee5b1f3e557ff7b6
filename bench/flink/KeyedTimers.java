/*
 * KeyedTimers: the Flink 2.x twin of `floe bench timers` (issue 18).
 *
 *   fromSource(NumberSequenceSource 0..N-1, one split per subtask,
 *              monotonous watermarks per split)
 *     i -> (i % K, t)  where t = (i mod N/P) / R ms: each split's event time
 *                      starts at 0 and advances 1 ms per R records
 *     keyBy(key)
 *     KeyedProcessFunction: ValueState<Long> count += 1, and an event-time
 *                      timer at the last ms of the record's second (unique
 *                      per key and second); onTimer clears the count
 *     DiscardingSink
 *
 * Run from the project root (the JVM, the MiniCluster and the jars come from
 * the shared Flink harness):
 *
 *   JOB_SRC=bench/flink/KeyedTimers.java ../shared/bench/flink/run.sh \
 *       --records 20000000 --keys 100000 --parallelism 2 --backend hashmap \
 *       --checkpoint-interval-ms 1000
 *
 * Prints one JSON line: records/s from the first record reaching the keyed
 * function to the end of its input (after the final watermark fired every
 * timer), timers fired, and Flink's checkpoint statistics.
 */

import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.lib.NumberSequenceSource;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.checkpoint.CheckpointStatsSnapshot;
import org.apache.flink.runtime.checkpoint.CompletedCheckpointStats;
import org.apache.flink.runtime.executiongraph.ArchivedExecutionGraph;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.jobmaster.JobResult;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.graph.StreamGraph;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.util.Collector;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

public class KeyedTimers {

    // The MiniCluster runs in this JVM: task threads and main() share these.
    static final AtomicLong FIRST_NS = new AtomicLong(Long.MAX_VALUE);
    static final AtomicLong LAST_NS = new AtomicLong(Long.MIN_VALUE);
    static final AtomicLong PROCESSED = new AtomicLong();
    static final AtomicLong FIRED = new AtomicLong();

    /** Count per key until the record's second ends. */
    public static class CountUntilSecondEnds
            extends KeyedProcessFunction<Long, Tuple2<Long, Long>, Void> {
        private transient ValueState<Long> count;
        transient boolean started;
        transient long processed;
        transient long fired;

        @Override
        public void open(OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(Tuple2<Long, Long> in, Context ctx, Collector<Void> out)
                throws Exception {
            if (!started) {
                started = true;
                FIRST_NS.accumulateAndGet(System.nanoTime(), Math::min);
            }
            Long c = count.value();
            count.update(c == null ? 1L : c + 1);
            long endOfSecond = (in.f1 / 1000 + 1) * 1000 - 1;
            ctx.timerService().registerEventTimeTimer(endOfSecond);
            processed++;
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Void> out) {
            count.clear();
            fired++;
        }
    }

    /** The keyed operator with an end-of-input hook, to stop the clock. */
    public static class TimedOperator
            extends KeyedProcessOperator<Long, Tuple2<Long, Long>, Void>
            implements BoundedOneInput {
        public TimedOperator(CountUntilSecondEnds f) {
            super(f);
        }

        @Override
        public void endInput() {
            LAST_NS.accumulateAndGet(System.nanoTime(), Math::max);
            CountUntilSecondEnds f = (CountUntilSecondEnds) getUserFunction();
            PROCESSED.addAndGet(f.processed);
            FIRED.addAndGet(f.fired);
        }
    }

    public static void main(String[] args) throws Exception {
        long records = 20_000_000L, keys = 100_000L, perMs = 1_000L, intervalMs = 1_000L;
        int parallelism = 2;
        String backend = "hashmap", ckptDir = "file:///tmp/flinkbench-ckpt";
        Boolean incremental = null;
        Map<String, String> extra = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--records": records = Long.parseLong(v.replace("_", "")); i++; break;
                case "--keys": keys = Long.parseLong(v.replace("_", "")); i++; break;
                case "--parallelism": parallelism = Integer.parseInt(v); i++; break;
                case "--backend": backend = v.toLowerCase(Locale.ROOT); i++; break;
                case "--incremental": incremental = Boolean.parseBoolean(v); i++; break;
                case "--checkpoint-interval-ms": intervalMs = Long.parseLong(v); i++; break;
                case "--checkpoint-dir": ckptDir = v; i++; break;
                case "--records-per-ms": perMs = Long.parseLong(v); i++; break;
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
        if (records % parallelism != 0) {
            throw new IllegalArgumentException("--records must be a multiple of --parallelism");
        }
        if (incremental == null) incremental = !backend.equals("hashmap");

        Map<String, String> c = new LinkedHashMap<>();
        c.put("parallelism.default", Integer.toString(parallelism));
        c.put("state.backend.type", backend);
        c.put("execution.checkpointing.incremental", incremental.toString());
        c.put("execution.checkpointing.dir", ckptDir);
        c.put("execution.checkpointing.storage", "filesystem");
        if (intervalMs > 0) c.put("execution.checkpointing.interval", intervalMs + " ms");
        c.put("pipeline.auto-watermark-interval", "200 ms");
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

        final long k = keys, perSubtask = records / parallelism, rate = perMs;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(parallelism);
        // Timestamps are assigned from the index in the source, per split,
        // so each split's watermark advances as in Floe's generator.
        WatermarkStrategy<Long> strategy = WatermarkStrategy.<Long>forMonotonousTimestamps()
                .withTimestampAssigner((i, prev) -> (i % perSubtask) / rate);
        env.fromSource(new NumberSequenceSource(0, records - 1), strategy, "sequence")
                .map(i -> Tuple2.of(i % k, (i % perSubtask) / rate))
                .returns(Types.TUPLE(Types.LONG, Types.LONG))
                .keyBy(t -> t.f0, Types.LONG)
                .transform("count-until-second-ends", Types.VOID,
                        new TimedOperator(new CountUntilSecondEnds()))
                .sinkTo(new DiscardingSink<>());
        StreamGraph graph = env.getStreamGraph();
        graph.setJobName("flinkbench-keyed-timers");

        MiniClusterConfiguration mcc = new MiniClusterConfiguration.Builder()
                .setConfiguration(conf)
                .setNumTaskManagers(1)
                .setNumSlotsPerTaskManager(parallelism)
                .setCommonBindAddress("127.0.0.1")
                .build();
        String json;
        try (MiniCluster mc = new MiniCluster(mcc)) {
            mc.start();
            JobID jobId = new JobID();
            JobGraph jobGraph = graph.getJobGraph(KeyedTimers.class.getClassLoader(), jobId);
            long submit = System.nanoTime();
            mc.submitJob(jobGraph).get();
            JobResult result = mc.requestJobResult(jobId).get();
            double jobSeconds = (System.nanoTime() - submit) / 1e9;
            if (!result.isSuccess()) {
                throw new RuntimeException("Flink job failed: " + result.getSerializedThrowable());
            }
            long completed = 0, failed = 0, lastDurMs = -1, lastStateBytes = -1;
            ArchivedExecutionGraph aeg = mc.getArchivedExecutionGraph(jobId).get(30, TimeUnit.SECONDS);
            CheckpointStatsSnapshot snap = aeg.getCheckpointStatsSnapshot();
            if (snap != null) {
                completed = snap.getCounts().getNumberOfCompletedCheckpoints();
                failed = snap.getCounts().getNumberOfFailedCheckpoints();
                CompletedCheckpointStats last = snap.getHistory() == null
                        ? null : snap.getHistory().getLatestCompletedCheckpoint();
                if (last != null) {
                    lastDurMs = last.getEndToEndDuration();
                    lastStateBytes = last.getStateSize();
                }
            }
            double seconds = (LAST_NS.get() - FIRST_NS.get()) / 1e9;
            json = String.format(Locale.ROOT,
                    "{\"engine\":\"flink\",\"job\":\"keyed_timers\",\"records\":%d,\"keys\":%d,"
                            + "\"parallelism\":%d,\"backend\":\"%s\",\"incremental\":%b,"
                            + "\"checkpoint_interval_ms\":%d,\"processed\":%d,\"timers_fired\":%d,"
                            + "\"seconds\":%.3f,\"records_per_sec\":%d,\"job_seconds\":%.3f,"
                            + "\"checkpoints_completed\":%d,\"checkpoints_failed\":%d,"
                            + "\"last_checkpoint_duration_ms\":%d,\"last_checkpoint_state_bytes\":%d}",
                    records, keys, parallelism, backend, incremental, intervalMs, PROCESSED.get(),
                    FIRED.get(), seconds, Math.round(PROCESSED.get() / seconds), jobSeconds,
                    completed, failed, lastDurMs, lastStateBytes);
        }
        System.out.println(json);
        System.out.flush();
        System.exit(0);
    }
}
