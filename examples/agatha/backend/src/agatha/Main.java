package agatha;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

/**
 * The example backend: serves the quotes the migrations put into an H2 database.
 *
 * <p>Configuration comes from the file named by {@code agatha.config} (default
 * {@code agatha.properties} in the working directory): {@code db.url}, {@code db.user},
 * {@code db.password}, {@code http.port}.
 */
public final class Main {
    static final String GREETING = "agatha";

    public static void main(String[] args) throws Exception {
        Properties conf = new Properties();
        Path file = Path.of(System.getProperty("agatha.config", "agatha.properties"));
        try (InputStream in = Files.newInputStream(file)) {
            conf.load(in);
        }
        String url = conf.getProperty("db.url");
        String user = conf.getProperty("db.user", "sa");
        String password = conf.getProperty("db.password", "");
        int port = Integer.parseInt(conf.getProperty("http.port", "8080"));

        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/health", ex -> reply(ex, 200, GREETING + " ok\n"));
        server.createContext("/quotes", ex -> {
            try (Connection db = DriverManager.getConnection(url, user, password);
                 Statement st = db.createStatement();
                 ResultSet rs = st.executeQuery("SELECT author, text FROM quotes ORDER BY id")) {
                StringBuilder body = new StringBuilder();
                while (rs.next()) {
                    body.append(rs.getString(1)).append(": ").append(rs.getString(2)).append('\n');
                }
                reply(ex, 200, body.toString());
            } catch (SQLException e) {
                reply(ex, 500, "database error: " + e.getMessage() + "\n");
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(0)));
        server.start();
        System.out.println(GREETING + " listening on port " + port);
    }

    private static void reply(HttpExchange ex, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }
}
