package sparkcnn;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

import javax.security.sasl.AuthenticationException;

import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/** HiveServer2's CUSTOM authentication: any user name, the password whose SHA-256 (hex) is in the file
 *  that the JVM's system property sparkcnn.sql.passwordHashFile names; read on every connection. */
public final class Password implements PasswdAuthenticationProvider {
    static final String HASH_FILE = "sparkcnn.sql.passwordHashFile";

    @Override
    public void Authenticate(String user, String password) throws AuthenticationException {
        byte[] got = hex(digest(password == null ? "" : password));
        if (!MessageDigest.isEqual(expected(), got)) {
            throw new AuthenticationException("wrong password for the sparkcnn SQL server");
        }
    }

    static byte[] expected() throws AuthenticationException {
        String file = System.getProperty(HASH_FILE);
        try {
            return Files.readString(Paths.get(file)).trim().getBytes(StandardCharsets.US_ASCII);
        } catch (IOException | RuntimeException e) {
            throw new AuthenticationException("the sparkcnn SQL server cannot read its password's hash: " + e);
        }
    }

    static byte[] digest(String password) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(password.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static byte[] hex(byte[] digest) {
        StringBuilder text = new StringBuilder();
        for (byte b : digest) {
            text.append(String.format("%02x", b));
        }
        return text.toString().getBytes(StandardCharsets.US_ASCII);
    }
}
