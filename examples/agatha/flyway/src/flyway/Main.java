package flyway;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * A small flyway-like migration tool: {@code flyway -configFiles=FILE migrate}.
 *
 * <p>Reads {@code flyway.url}, {@code flyway.user}, {@code flyway.password} and
 * {@code flyway.locations} ({@code filesystem:DIR}, comma-separated) from FILE, applies the
 * {@code V<version>__<description>.sql} scripts not yet applied, in version order, each in one
 * transaction, and records them in {@code flyway_schema_history}. Running it again applies
 * nothing; a script changed after it was applied stops it with an error.
 */
public final class Main {
    private static final Pattern NAME = Pattern.compile("V(\\d+(?:[._]\\d+)*)__(.+)\\.sql");

    record Script(String version, String description, String file, String sql, String checksum) {}

    public static void main(String[] args) {
        try {
            System.exit(run(args));
        } catch (Failure e) {
            System.err.println("flyway: " + e.getMessage());
            System.exit(1);
        }
    }

    static final class Failure extends Exception {
        Failure(String message) {
            super(message);
        }
    }

    static int run(String[] args) throws Failure {
        String configFile = null;
        String command = null;
        for (String a : args) {
            if (a.startsWith("-configFiles=")) {
                configFile = a.substring("-configFiles=".length());
            } else if (!a.startsWith("-")) {
                command = a;
            } else {
                throw new Failure("unknown option " + a);
            }
        }
        if (!"migrate".equals(command)) {
            throw new Failure("usage: flyway -configFiles=FILE migrate");
        }
        Properties conf = new Properties();
        Path confPath = Path.of(configFile == null ? "flyway.conf" : configFile);
        try (InputStream in = Files.newInputStream(confPath)) {
            conf.load(in);
        } catch (Exception e) {
            throw new Failure("cannot read " + confPath + ": " + e.getMessage());
        }
        String url = require(conf, "flyway.url", confPath);
        String locations = require(conf, "flyway.locations", confPath);
        List<Script> scripts = load(locations);
        try (Connection db = DriverManager.getConnection(url,
                conf.getProperty("flyway.user", "sa"), conf.getProperty("flyway.password", ""))) {
            return migrate(db, scripts);
        } catch (SQLException e) {
            throw new Failure("database " + url + ": " + e.getMessage());
        }
    }

    private static String require(Properties conf, String key, Path file) throws Failure {
        String v = conf.getProperty(key);
        if (v == null || v.isBlank()) {
            throw new Failure(file + ": missing " + key);
        }
        return v.trim();
    }

    static List<Script> load(String locations) throws Failure {
        TreeMap<List<Integer>, Script> byVersion = new TreeMap<>(Main::compareVersions);
        for (String loc : locations.split(",")) {
            loc = loc.trim();
            Path dir = Path.of(loc.startsWith("filesystem:") ? loc.substring("filesystem:".length()) : loc);
            try (Stream<Path> files = Files.list(dir)) {
                for (Path p : (Iterable<Path>) files.sorted()::iterator) {
                    Matcher m = NAME.matcher(p.getFileName().toString());
                    if (!m.matches()) {
                        continue;
                    }
                    String sql = Files.readString(p, StandardCharsets.UTF_8);
                    Script s = new Script(m.group(1).replace('_', '.'), m.group(2).replace('_', ' '),
                            p.getFileName().toString(), sql, sha256(sql));
                    if (byVersion.put(versionKey(s.version()), s) != null) {
                        throw new Failure("two migrations have version " + s.version());
                    }
                }
            } catch (java.io.IOException e) {
                throw new Failure("cannot read migrations in " + dir + ": " + e.getMessage());
            }
        }
        return new ArrayList<>(byVersion.values());
    }

    static int migrate(Connection db, List<Script> scripts) throws SQLException, Failure {
        try (Statement st = db.createStatement()) {
            st.execute("CREATE TABLE IF NOT EXISTS flyway_schema_history ("
                    + "installed_rank INT PRIMARY KEY, version VARCHAR(50) NOT NULL, "
                    + "description VARCHAR(200) NOT NULL, script VARCHAR(1000) NOT NULL, "
                    + "checksum VARCHAR(64) NOT NULL, installed_on TIMESTAMP DEFAULT CURRENT_TIMESTAMP, "
                    + "success BOOLEAN NOT NULL)");
        }
        TreeMap<String, String> applied = new TreeMap<>();
        int rank = 0;
        try (Statement st = db.createStatement();
             ResultSet rs = st.executeQuery("SELECT version, checksum, installed_rank FROM flyway_schema_history")) {
            while (rs.next()) {
                applied.put(rs.getString(1), rs.getString(2));
                rank = Math.max(rank, rs.getInt(3));
            }
        }
        int count = 0;
        db.setAutoCommit(false);
        for (Script s : scripts) {
            String known = applied.get(s.version());
            if (known != null) {
                if (!known.equals(s.checksum())) {
                    throw new Failure("migration " + s.file() + " was changed after it was applied "
                            + "(checksum " + known + " recorded, " + s.checksum() + " now)");
                }
                continue;
            }
            try (Statement st = db.createStatement()) {
                for (String stmt : statements(s.sql())) {
                    if (!stmt.isBlank()) {
                        st.execute(stmt);
                    }
                }
                try (PreparedStatement ins = db.prepareStatement("INSERT INTO flyway_schema_history "
                        + "(installed_rank, version, description, script, checksum, success) VALUES (?, ?, ?, ?, ?, TRUE)")) {
                    ins.setInt(1, ++rank);
                    ins.setString(2, s.version());
                    ins.setString(3, s.description());
                    ins.setString(4, s.file());
                    ins.setString(5, s.checksum());
                    ins.executeUpdate();
                }
                db.commit();
                count++;
                System.out.println("flyway: applied " + s.file());
            } catch (SQLException e) {
                db.rollback();
                throw new Failure("migration " + s.file() + " failed: " + e.getMessage());
            }
        }
        System.out.println("flyway: " + count + " migration(s) applied, schema at version "
                + (scripts.isEmpty() ? "none" : scripts.get(scripts.size() - 1).version()));
        return 0;
    }

    /** Split a script at the semicolons that are not inside a single-quoted string. */
    static List<String> statements(String sql) {
        List<String> out = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        boolean quoted = false;
        for (char c : sql.toCharArray()) {
            if (c == '\'') {
                quoted = !quoted;
            }
            if (c == ';' && !quoted) {
                out.add(cur.toString());
                cur.setLength(0);
            } else {
                cur.append(c);
            }
        }
        out.add(cur.toString());
        return out;
    }

    static List<Integer> versionKey(String v) {
        List<Integer> key = new ArrayList<>();
        for (String part : v.split("\\.")) {
            key.add(Integer.parseInt(part));
        }
        return key;
    }

    static int compareVersions(List<Integer> a, List<Integer> b) {
        for (int i = 0; i < Math.max(a.size(), b.size()); i++) {
            int x = i < a.size() ? a.get(i) : 0;
            int y = i < b.size() ? b.get(i) : 0;
            if (x != y) {
                return Integer.compare(x, y);
            }
        }
        return 0;
    }

    static String sha256(String text) {
        try {
            return HexFormat.of().formatHex(
                    MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8)));
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
