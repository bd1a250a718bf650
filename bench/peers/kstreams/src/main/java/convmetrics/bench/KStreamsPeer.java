package convmetrics.bench;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.util.Utf8;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.StreamJoined;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * The Kafka Streams peer of bench/peers: the subset job plus time to close, in the DSL.
 *
 * <pre>
 * source (Avro single-object, decoded here with Avro's BinaryMessageDecoder, key "account:conversation")
 *   |-- closures --groupBy(channel type)--> TimeWindows 60 s (grace G) .count()  --> "m|ch|minute" = n
 *   |           --groupBy(account)-------> .count()                           --> "a|account"   = n
 *   `-- closures JOIN starts (created/opened) per conversation, start in [closedAt - 400 d, closedAt]
 *         --groupBy(closure event id)--> reduce(latest start)   (a KTable: one time to close per closure)
 *         --groupBy(channel type)------> aggregate(n, sum) with a subtractor (a later start retracts)
 *                                                                             --> "t|ch" = "n,sum"
 * </pre>
 *
 * With --ttc off, only the two counts (the Quix Streams and Faust peers' job).
 *
 * <p>processing.guarantee=exactly_once_v2, RocksDB stores (the DSL default). Event time:
 * data.closedAt / data.createdAt / data.openedAt ..., else the envelope createdAt (as our
 * consumer). Timed from the first source record to the moment a read_committed consumer of
 * the output topic sees the final aggregates (the expected values come from the bench's
 * plain scan; a wrong peer never gets there and stops after a quiet period instead).
 */
public final class KStreamsPeer {
    static final Utf8 CLOSED = new Utf8("conversation.closed");
    static final Utf8 CREATED = new Utf8("conversation.created");
    static final Utf8 OPENED = new Utf8("conversation.opened");
    static final Map<String, String> TIME_FIELDS = Map.of(
            "conversation.created", "createdAt",
            "conversation.opened", "openedAt",
            "conversation.closed", "closedAt",
            "conversation.snoozed", "snoozedAt",
            "conversation.assigned", "assignedAt");

    private KStreamsPeer() {}

    /** Event time in unix seconds: data.&lt;verb&gt;At, else the envelope createdAt. */
    static long eventSeconds(GenericRecord r) {
        String field = TIME_FIELDS.get(r.get("event").toString());
        if (field != null) {
            Object t = ((GenericRecord) r.get("data")).get(field);
            if (t != null) {
                return (Long) t;
            }
        }
        return (Long) r.get("createdAt");
    }

    /** Our records: C3 01 + CRC-64-AVRO fingerprint + body, any shipped writer version. */
    static final class EventDeserializer implements Deserializer<GenericRecord> {
        private final BinaryMessageDecoder<GenericRecord> decoder;

        EventDeserializer(Schema reader, List<Schema> writers) {
            decoder = new BinaryMessageDecoder<>(GenericData.get(), reader);
            for (Schema w : writers) {
                decoder.addSchema(w);
            }
        }

        @Override
        public GenericRecord deserialize(String topic, byte[] data) {
            try {
                return decoder.decode(data);
            } catch (IOException e) {
                throw new IllegalArgumentException("cannot decode a record of " + topic, e);
            }
        }
    }

    static final class EventTime implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            return eventSeconds((GenericRecord) record.value()) * 1000L;
        }
    }

    // closure value: "eventId\tchannelType\taccount\tclosedAt"; joined: + "\tstart"
    static String field(String v, int i) {
        int from = 0;
        for (int k = 0; k < i; k++) {
            from = v.indexOf('\t', from) + 1;
        }
        int to = v.indexOf('\t', from);
        return to < 0 ? v.substring(from) : v.substring(from, to);
    }

    static long ttc(String joined) {
        return Long.parseLong(field(joined, 3)) - Long.parseLong(field(joined, 4));
    }

    static String addTtc(String agg, long ttc, int sign) {
        int comma = agg.indexOf(',');
        long n = Long.parseLong(agg.substring(0, comma)) + sign;
        long sum = Long.parseLong(agg.substring(comma + 1)) + sign * ttc;
        return n + "," + sum;
    }

    static StreamsBuilder topology(Args a, AtomicLong seen, long[] first, Serde<GenericRecord> events) {
        StreamsBuilder b = new StreamsBuilder();
        Serde<String> str = Serdes.String();
        KStream<String, GenericRecord> source = b.stream(
                a.topic, Consumed.with(str, events).withTimestampExtractor(new EventTime()));
        source = source.peek((k, v) -> {
            if (seen.getAndIncrement() == 0) {
                first[0] = System.nanoTime();
                first[1] = cpuNanos();
            }
        });
        KStream<String, String> closures = source
                .filter((k, r) -> CLOSED.equals(r.get("event")))
                .mapValues(r -> {
                    GenericRecord d = (GenericRecord) r.get("data");
                    Object t = d.get("closedAt");
                    return r.get("id") + "\t" + d.get("channelType") + "\t" + r.get("account") + "\t"
                            + (t == null ? r.get("createdAt") : t);
                });
        Duration grace = Duration.ofSeconds(a.graceSeconds);
        closures.groupBy((k, v) -> field(v, 1), Grouped.with("by-channel", str, str))
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(60), grace))
                .count(Materialized.as("per-minute"))
                .toStream()
                .map((w, n) -> KeyValue.pair("m|" + w.key() + "|" + w.window().start() / 1000, n.toString()))
                .to(a.output, Produced.with(str, str));
        closures.groupBy((k, v) -> field(v, 2), Grouped.with("by-account", str, str))
                .count(Materialized.as("per-account"))
                .toStream()
                .map((acct, n) -> KeyValue.pair("a|" + acct, n.toString()))
                .to(a.output, Produced.with(str, str));
        if (!a.ttc) {
            return b;
        }
        KStream<String, Long> starts = source
                .filter((k, r) -> CREATED.equals(r.get("event")) || OPENED.equals(r.get("event")))
                .mapValues(KStreamsPeer::eventSeconds);
        closures.join(
                        starts,
                        (c, s) -> c + "\t" + s,
                        JoinWindows.ofTimeDifferenceAndGrace(Duration.ofDays(a.startDays), grace)
                                .after(Duration.ZERO),
                        StreamJoined.with(str, str, Serdes.Long()).withName("start-close"))
                .groupBy((k, v) -> field(v, 0), Grouped.with("by-closure", str, str))
                .reduce((x, y) -> Long.parseLong(field(y, 4)) > Long.parseLong(field(x, 4)) ? y : x,
                        Materialized.as("latest-start"))
                .groupBy((id, v) -> KeyValue.pair(field(v, 1), v), Grouped.with("ttc-by-channel", str, str))
                .aggregate(() -> "0,0",
                        (ch, v, agg) -> addTtc(agg, ttc(v), 1),
                        (ch, v, agg) -> addTtc(agg, ttc(v), -1),
                        Materialized.<String, String, org.apache.kafka.streams.state.KeyValueStore<
                                org.apache.kafka.common.utils.Bytes, byte[]>>as("ttc")
                                .withKeySerde(str).withValueSerde(str))
                .toStream()
                .map((ch, agg) -> KeyValue.pair("t|" + ch, agg))
                .to(a.output, Produced.with(str, str));
        return b;
    }

    static long cpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    /**
     * CPU seconds of this process's threads since they started, grouped by what they do
     * (/proc/self/task: thread names are cut to 15 characters, so the stream thread shows as
     * the application id's first 15 characters).
     */
    static Map<String, Double> cpuByThread(String appId) throws IOException {
        Map<String, Double> out = new java.util.TreeMap<>();
        String streamPrefix = appId.substring(0, Math.min(15, appId.length()));
        try (var tasks = Files.list(Path.of("/proc/self/task"))) {
            for (Path t : (Iterable<Path>) tasks::iterator) {
                String comm;
                String stat;
                try {
                    comm = Files.readString(t.resolve("comm")).strip();
                    stat = Files.readString(t.resolve("stat"));
                } catch (IOException gone) {
                    continue;
                }
                String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
                double seconds = (Long.parseLong(f[11]) + Long.parseLong(f[12])) / 100.0; // utime, stime
                String group;
                if (comm.startsWith(streamPrefix)) {
                    group = "stream and state-updater threads";
                } else if (comm.startsWith("C1 Compiler") || comm.startsWith("C2 Compiler")) {
                    group = "JIT compilers";
                } else if (comm.startsWith("GC ") || comm.startsWith("G1 ")) {
                    group = "GC";
                } else if (comm.startsWith("kafka-producer")) {
                    group = "producer I/O";
                } else {
                    group = "other (main, admin, VM)";
                }
                out.merge(group, seconds, Double::sum);
            }
        }
        return out;
    }

    static long peakRssKb() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }

    static final class Args {
        String bootstrap, topic, group, output, workdir;
        long total, graceSeconds, startDays, quietSeconds = 60;
        boolean ttc = true;
        Path readerSchema, expected;
        List<Path> writers = new ArrayList<>();

        static Args parse(String[] argv) {
            Args a = new Args();
            for (int i = 0; i + 1 < argv.length; i += 2) {
                String v = argv[i + 1];
                switch (argv[i]) {
                    case "--bootstrap" -> a.bootstrap = v;
                    case "--topic" -> a.topic = v;
                    case "--total" -> a.total = Long.parseLong(v);
                    case "--group" -> a.group = v;
                    case "--output" -> a.output = v;
                    case "--workdir" -> a.workdir = v;
                    case "--grace-seconds" -> a.graceSeconds = Long.parseLong(v);
                    case "--start-days" -> a.startDays = Long.parseLong(v);
                    case "--quiet-seconds" -> a.quietSeconds = Long.parseLong(v);
                    case "--ttc" -> {
                        if (!v.equals("on") && !v.equals("off")) {
                            throw new IllegalArgumentException("--ttc takes on or off, not " + v);
                        }
                        a.ttc = v.equals("on");
                    }
                    case "--reader-schema" -> a.readerSchema = Path.of(v);
                    case "--writer-schema" -> a.writers.add(Path.of(v));
                    case "--expected" -> a.expected = Path.of(v);
                    default -> throw new IllegalArgumentException("unknown option " + argv[i]);
                }
            }
            String[][] required = {{"--bootstrap", a.bootstrap}, {"--topic", a.topic}, {"--group", a.group},
                {"--output", a.output}, {"--workdir", a.workdir}, {"--reader-schema", "" + a.readerSchema},
                {"--expected", "" + a.expected}};
            for (String[] r : required) {
                if (r[1] == null || r[1].equals("null")) {
                    throw new IllegalArgumentException(r[0] + " is required");
                }
            }
            if (a.total <= 0 || a.graceSeconds <= 0 || a.startDays <= 0 || a.writers.isEmpty()) {
                throw new IllegalArgumentException(
                        "--total, --grace-seconds, --start-days and at least one --writer-schema are required");
            }
            return a;
        }
    }

    public static void main(String[] argv) throws Exception {
        Args a = Args.parse(argv);
        Schema reader = new Schema.Parser().parse(Files.readString(a.readerSchema));
        List<Schema> writers = new ArrayList<>();
        for (Path p : a.writers) {
            writers.add(new Schema.Parser().parse(Files.readString(p)));
        }
        EventDeserializer de = new EventDeserializer(reader, writers);
        Serde<GenericRecord> events = Serdes.serdeFrom(
                (t, v) -> {
                    throw new UnsupportedOperationException("the peer never writes events");
                },
                de);
        Map<String, String> expected = new HashMap<>();
        for (String line : Files.readAllLines(a.expected, StandardCharsets.UTF_8)) {
            int tab = line.indexOf('\t');
            expected.put(line.substring(0, tab), line.substring(tab + 1));
        }

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.group);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.STATE_DIR_CONFIG, Path.of(a.workdir, "state").toString());
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        try (Admin admin = Admin.create(Map.of("bootstrap.servers", a.bootstrap))) {
            admin.createTopics(List.of(new NewTopic(a.output, 1, (short) 1))).all().get();
        }

        AtomicLong seen = new AtomicLong();
        long[] first = new long[2];
        KafkaStreams streams = new KafkaStreams(topology(a, seen, first, events).build(p), p);
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .SHUTDOWN_CLIENT;
        });

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.bootstrap);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        KafkaConsumer<String, String> out =
                new KafkaConsumer<>(cp, new StringDeserializer(), new StringDeserializer());
        TopicPartition tp = new TopicPartition(a.output, 0);
        out.assign(List.of(tp));
        out.seekToBeginning(List.of(tp));

        streams.start();
        Map<String, String> current = new HashMap<>();
        int matching = 0;
        int extra = 0;
        long outputRecords = 0;
        long lastChange = System.nanoTime();
        long done = 0;
        long doneCpu = 0;
        while (true) {
            ConsumerRecords<String, String> recs = out.poll(Duration.ofMillis(20));
            for (ConsumerRecord<String, String> r : recs) {
                outputRecords++;
                String want = expected.get(r.key());
                String old = current.put(r.key(), r.value());
                if (want == null) {
                    if (old == null) {
                        extra++;
                    }
                    continue;
                }
                if (want.equals(old)) {
                    matching--;
                }
                if (want.equals(r.value())) {
                    matching++;
                }
            }
            long t = System.nanoTime();
            if (!recs.isEmpty()) {
                lastChange = t;
            }
            if (matching == expected.size() && extra == 0 && seen.get() >= a.total) {
                done = t;
                doneCpu = cpuNanos();
                break;
            }
            boolean quiet = (t - lastChange) / 1e9 > a.quietSeconds;
            if ((quiet && seen.get() >= a.total) || streams.state() == KafkaStreams.State.ERROR
                    || streams.state() == KafkaStreams.State.PENDING_ERROR) {
                break;
            }
        }
        boolean matched = done != 0;
        StringBuilder threads = new StringBuilder("{");
        for (Map.Entry<String, Double> e : cpuByThread(a.group).entrySet()) {
            threads.append(threads.length() > 1 ? ", " : "").append('"').append(e.getKey()).append("\": ")
                    .append(String.format(java.util.Locale.ROOT, "%.2f", e.getValue()));
        }
        threads.append('}');
        double seconds = matched ? (done - first[0]) / 1e9 : Double.NaN;
        String json = "{\"name\": \"kstreams\", \"records\": " + seen.get()
                + ", \"seconds\": " + (matched ? seconds : "null")
                + ", \"events_per_s\": " + (matched ? seen.get() / seconds : "null")
                + ", \"cpu_s\": " + (matched ? (doneCpu - first[1]) / 1e9 : "null")
                + ", \"peak_rss_mb\": " + peakRssKb() / 1024.0
                + ", \"cpu_by_thread_s\": " + threads
                + ", \"output_matched\": " + matched
                + ", \"output_records\": " + outputRecords
                + ", \"output_keys\": " + current.size()
                + ", \"unexpected_keys\": " + extra
                + ", \"state\": \"" + streams.state() + "\"}";
        Files.writeString(Path.of(a.workdir, "result.json"), json);
        out.close();
        streams.close(Duration.ofSeconds(30));
        System.exit(matched ? 0 : 1);
    }
}
