// What java.util.Properties.load(Reader) makes of tricky .properties text: the truth that
// tests/data/java_properties_cases.txt records and src/conf/properties.rs must agree with.
//
// Run with a JDK 17 or later (single-file source launch, no build):
//     java scripts/java/PropertiesProbe.java > tests/data/java_properties_cases.txt
// (scripts/java/regen-properties-cases.sh does that). The output is stable: hand cases, then
// cases drawn from a fixed seed over the alphabet that trips parsers up.
//
// Format, one block per case:
//     case <name>
//     in "<input>"
//     ok <n>                      then n lines   kv "<key>" "<value>"   sorted by escaped key
//     err <exception class>: <message>
// Escaping, per UTF-16 code unit: a backslash is two backslashes; '"' and every unit outside
// 0x21..0x7E is a backslash, 'u' and four upper-case hex digits; anything else is itself. So a
// line never holds a raw space or control. (No such escape is spelled out here: javac decodes
// them even in comments.)

import java.io.IOException;
import java.io.PrintStream;
import java.io.StringReader;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.TreeMap;

public class PropertiesProbe {
    static String esc(String s) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\') {
                b.append("\\\\");
            } else if (c > 0x20 && c < 0x7F && c != '"') {
                b.append(c);
            } else {
                b.append(String.format("\\u%04X", (int) c));
            }
        }
        return b.toString();
    }

    static void probe(PrintStream out, String name, String input) {
        out.println("case " + name);
        out.println("in \"" + esc(input) + "\"");
        Properties p = new Properties();
        try {
            p.load(new StringReader(input));
        } catch (IllegalArgumentException | IOException e) {
            out.println("err " + e.getClass().getName() + ": " + e.getMessage());
            return;
        }
        TreeMap<String, String> sorted = new TreeMap<>();
        for (String k : p.stringPropertyNames()) {
            sorted.put(esc(k), esc(p.getProperty(k)));
        }
        out.println("ok " + sorted.size());
        for (Map.Entry<String, String> e : sorted.entrySet()) {
            out.println("kv \"" + e.getKey() + "\" \"" + e.getValue() + "\"");
        }
    }

    /** Written by hand: each names the rule it pins. */
    static final String[][] HAND = {
        {"plain-equals", "spark.executor.memory=4g\n"},
        {"plain-colon", "spark.executor.memory:4g\n"},
        {"plain-space", "spark.executor.memory 4g\n"},
        {"space-then-equals", "k   =   v\n"},
        {"space-then-colon", "k \t: v\n"},
        {"equals-then-equals", "k==v\n"},
        {"space-equals-equals", "k = =v\n"},
        {"colon-then-equals", "k:=v\n"},
        {"tab-separator", "k\tv\n"},
        {"formfeed-separator", "k\fv\n"},
        {"formfeed-leading", "\f\fk=v\n"},
        {"vertical-tab-is-not-whitespace", "k\u000Bv\n"},
        {"vertical-tab-leading-is-key", "\u000Bk=v\n"},
        {"nbsp-is-not-whitespace", "k\u00A0v\n"},
        {"nbsp-leading-is-key", "\u00A0k=v\n"},
        {"em-space-is-not-whitespace", "k\u2003v\n"},
        {"nel-is-not-a-line-end", "a=1\u0085b=2\n"},
        {"line-separator-is-not-a-line-end", "a=1\u2028b=2\n"},
        {"ideographic-space", "\u3000k\u3000=\u3000v\u3000\n"},
        {"trailing-whitespace-kept", "k=v \t\f\n"},
        {"trailing-vt-kept", "k=v\u000B\n"},
        {"bare-cr", "a=1\rb=2\rc=3"},
        {"crlf", "a=1\r\nb=2\r\nc=3\r\n"},
        {"lf-cr", "a=1\n\rb=2\n\r"},
        {"mixed-line-ends", "a=1\rb=2\nc=3\r\nd=4"},
        {"no-final-newline", "a=1"},
        {"empty", ""},
        {"only-newlines", "\n\r\n\r\n"},
        {"only-whitespace", " \t\f \n"},
        {"hash-comment", "# a=1\nb=2\n"},
        {"bang-comment", "! a=1\nb=2\n"},
        {"comment-after-whitespace", "  \t# a=1\n\f! b=2\nc=3\n"},
        {"hash-mid-line", "a=1 # not a comment\n"},
        {"hash-in-key", "a#b=1\n"},
        {"bang-value", "a=!1\n"},
        {"comment-ends-at-cr", "# c\ra=1\n"},
        {"comment-ends-at-crlf", "# c\r\na=1\r\n"},
        {"comment-with-backslash-does-not-continue", "# c \\\na=1\n"},
        {"comment-at-eof", "a=1\n# c"},
        {"continuation", "a=1,\\\n    2\n"},
        {"continuation-crlf", "a=1,\\\r\n    2\r\n"},
        {"continuation-cr", "a=1,\\\r    2\r"},
        {"continuation-tabs-ff", "a=1,\\\n\t\f 2\n"},
        {"continuation-keeps-vt", "a=1,\\\n\u000B2\n"},
        {"even-backslashes-end-line", "a=1\\\\\nb=2\n"},
        {"three-backslashes-continue", "a=1\\\\\\\nb=2\n"},
        {"four-backslashes-end-line", "a=1\\\\\\\\\nb=2\n"},
        {"continuation-into-blank-line", "a=1\\\n\nb=2\n"},
        {"continuation-into-whitespace-line", "a=1\\\n   \nb=2\n"},
        {"continuation-at-eof", "a=1\\"},
        {"continuation-then-eof-after-newline", "a=1\\\n"},
        {"lone-backslash-at-eof", "\\"},
        {"lone-backslash-line", "\\\na=1\n"},
        {"continuation-into-hash", "a=1\\\n# 2\n"},
        {"backslash-line-then-hash", "\\\n#x=1\nb=2\n"},
        {"continuation-in-key", "ab\\\n  cd=1\n"},
        {"continuation-before-separator", "ab\\\n  =1\n"},
        {"continuation-then-comment-line-kept", "a=\\\n  # v\n"},
        {"escaped-equals-in-key", "a\\=b=c\n"},
        {"escaped-colon-in-key", "a\\:b:c\n"},
        {"escaped-space-in-key", "a\\ b c\n"},
        {"escaped-tab-in-key", "a\\\tb c\n"},
        {"escaped-backslash-then-separator", "a\\\\=b\n"},
        {"escaped-hash-key", "\\#a=1\n"},
        {"escaped-bang-key", "\\!a=1\n"},
        {"escapes-t-n-r-f", "k=\\t\\n\\r\\f\n"},
        {"escape-other-letters", "k=\\a\\b\\z\\\"\\'\n"},
        {"escape-in-key", "k\\ty=1\n"},
        {"unicode-escape", "k=\\u0041\\u00e9\\u20AC\n"},
        {"unicode-escape-key", "\\u006B=v\n"},
        {"unicode-escape-space-in-key", "a\\u0020b=c\n"},
        {"unicode-escape-equals-in-key", "a\\u003Db=c\n"},
        {"unicode-escape-upper-u-is-not", "k=\\U0041\n"},
        {"unicode-surrogate-pair", "k=\\uD83D\\uDE00\n"},
        {"unicode-lone-high-surrogate", "k=\\uD83D\n"},
        {"unicode-lone-low-surrogate", "k=\\uDE00x\n"},
        {"malformed-unicode-short", "k=\\u00\n"},
        {"malformed-unicode-non-hex", "k=\\u00G1\n"},
        {"malformed-unicode-at-key-end", "k\\u00=41\n"},
        {"malformed-unicode-after-good-lines", "a=1\nb=2\nc=\\uZZZZ\n"},
        {"malformed-unicode-in-comment-is-fine", "# \\uZZZZ\na=1\n"},
        {"malformed-unicode-split-by-continuation", "k=\\u00\\\n  41\n"},
        {"unicode-escape-plus-sign", "k=\\u+041\n"},
        {"duplicate-key-last-wins", "a=1\na=2\n"},
        {"empty-key", "=v\n"},
        {"empty-key-colon", ":v\n"},
        {"empty-value", "k=\n"},
        {"key-only", "k\n"},
        {"key-only-trailing-space", "k   \n"},
        {"value-with-separators", "k=a=b:c d\n"},
        {"non-ascii-key-value", "cl\u00e9=v\u00e4lue\n"},
        {"non-bmp", "k=\uD83D\uDE00\n"},
        {"bom-is-part-of-key", "\uFEFFk=v\n"},
        {"nul-char", "k=a\u0000b\n"},
        {"spark-defaults", "# Spark\nspark.master  local[2]\nspark.executor.memory   4g\n"
            + "spark.executor.extraJavaOptions  -XX:+PrintGCDetails -Dkey=value\n"},
    };

    /** The alphabet that trips parsers up, with '\' and line ends drawn more often. */
    static final char[] ALPHABET = {
        '\\', '\\', '\\', '\r', '\n', '\n', ' ', '\t', '\f', '=', ':', '#', '!', 'u', 'u',
        '0', '4', '9', 'a', 'D', 'e', 'F', 'k', 'v', '\u00e9', '\u000B', '\u00A0',
    };

    public static void main(String[] args) {
        PrintStream out = System.out;
        out.println("# Generated by scripts/java/regen-properties-cases.sh with "
            + "java.util.Properties.load(Reader) of Java " + System.getProperty("java.version")
            + "; do not edit.");
        out.println("# Format: see scripts/java/PropertiesProbe.java.");
        for (String[] c : HAND) {
            probe(out, c[0], c[1]);
        }
        Random random = new Random(20261202L);
        for (int n = 0; n < 400; n++) {
            int len = random.nextInt(24);
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < len; i++) {
                b.append(ALPHABET[random.nextInt(ALPHABET.length)]);
            }
            probe(out, "generated-" + n, b.toString());
        }
    }
}
