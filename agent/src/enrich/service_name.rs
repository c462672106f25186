//! A service name from an interpreter's command line: `python3 -u /srv/app/service_a.py` →
//! `service_a`, `python3 -m http.server` → `http.server`, `java -jar /app/orders-1.2.jar` →
//! `orders-1.2`, `node server.js` → `server`.
//!
//! Pure: it gets the executable's file name and its arguments (argv without argv\[0\]) and
//! returns a name or `None`, in which case the caller names the service after the executable.
//! It never returns an argument as is, only a script's file stem, a module name or a Java
//! main class, and only if that looks like a name (see [`plausible_name`]): command lines
//! carry secrets (`--password=…`, tokens), and a wrong guess about which argument is the script
//! must not put one in the resource. It does not read /proc (see [`super::process`]).
//!
//! Each runtime's options are modelled just enough to skip them: which ones take a separate
//! value, which ones mean "no script" (`-c`, `-e`: code on the command line, which we do not
//! look at), and which ones name the program (`-m`, `-jar`). Unknown options are assumed to
//! take no value, so a misparse picks a value as the "script", which [`plausible_name`] then
//! usually rejects.

use std::path::Path;

use crate::span::route;

/// Longest name we derive from a command line.
const MAX_DERIVED_NAME: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    Python,
    Node,
    Deno,
    Bun,
    Ruby,
    Perl,
    Php,
    Java,
    Dotnet,
    Shell,
}

/// How an option's value names the program.
#[derive(Clone, Copy)]
enum Names {
    /// Used as is: a Python module (`-m http.server`), or for Java `-m mod/Main` the main class.
    Module,
    /// The file stem of a path: `-jar /app/x.jar`, PHP `-f x.php`.
    Stem,
}

struct Spec {
    /// Options that take the next argument as their value (unless written `--opt=value`).
    takes_value: &'static [&'static str],
    /// Options after which the program comes from somewhere we do not look (`-c code`, stdin).
    no_script: &'static [&'static str],
    /// Options whose value names the program.
    names: &'static [(&'static str, Names)],
    /// Words skipped before the script (`deno run x.ts`, `dotnet exec x.dll`).
    subcommands: &'static [&'static str],
    /// Single-letter options may be clustered (`python -um http.server`, `bash -ex x.sh`).
    clusters: bool,
}

fn runtime(exe_name: &str) -> Option<Runtime> {
    // python3, python3.11, pypy3.10, ruby3.2, php8.2, perl5.36: strip the version suffix.
    let base = exe_name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match base {
        "python" | "pypy" => Runtime::Python,
        "node" | "nodejs" => Runtime::Node,
        "deno" => Runtime::Deno,
        "bun" => Runtime::Bun,
        "ruby" => Runtime::Ruby,
        "perl" => Runtime::Perl,
        "php" => Runtime::Php,
        "java" => Runtime::Java,
        "dotnet" => Runtime::Dotnet,
        "bash" | "sh" | "dash" | "zsh" | "ash" => Runtime::Shell,
        _ => return None,
    })
}

fn spec(rt: Runtime) -> Spec {
    const NONE: &[&str] = &[];
    match rt {
        Runtime::Python => Spec {
            takes_value: &["-W", "-X", "--check-hash-based-pycs"],
            no_script: &["-c"],
            names: &[("-m", Names::Module)],
            subcommands: NONE,
            clusters: true,
        },
        Runtime::Node => Spec {
            takes_value: &[
                "-r",
                "--require",
                "--import",
                "--loader",
                "--experimental-loader",
                "-C",
                "--conditions",
                "--title",
                "--env-file",
            ],
            no_script: &[
                "-e",
                "--eval",
                "-p",
                "--print",
                "-i",
                "--interactive",
                "--test",
            ],
            names: &[],
            subcommands: NONE,
            clusters: false,
        },
        Runtime::Deno => Spec {
            takes_value: &[
                "-c",
                "--config",
                "--import-map",
                "-L",
                "--log-level",
                "--location",
                "--seed",
                "--env-file",
            ],
            no_script: &["eval", "repl", "-e", "--eval"],
            names: &[],
            subcommands: &["run", "serve"],
            clusters: false,
        },
        Runtime::Bun => Spec {
            takes_value: &["--cwd", "--config", "-r", "--preload", "--env-file"],
            no_script: &["-e", "--eval", "-p", "--print", "x", "repl"],
            names: &[],
            subcommands: &["run"],
            clusters: false,
        },
        Runtime::Ruby => Spec {
            takes_value: &["-I", "-r", "-C", "-E", "--encoding"],
            no_script: &["-e"],
            names: &[],
            subcommands: NONE,
            clusters: true,
        },
        Runtime::Perl => Spec {
            takes_value: &["-I", "-M", "-m"],
            no_script: &["-e", "-E"],
            names: &[],
            subcommands: NONE,
            clusters: true,
        },
        Runtime::Php => Spec {
            takes_value: &["-c", "-d", "-z", "-t"],
            no_script: &["-r", "-R", "-B", "-E", "-F", "-a", "-S"],
            names: &[("-f", Names::Stem)],
            subcommands: NONE,
            clusters: false,
        },
        Runtime::Java => Spec {
            takes_value: &[
                "-cp",
                "-classpath",
                "--class-path",
                "-p",
                "--module-path",
                "--upgrade-module-path",
                "--add-modules",
                "--add-opens",
                "--add-exports",
                "--add-reads",
                "--patch-module",
                "--limit-modules",
                "--source",
            ],
            no_script: &["-version", "--version", "-help", "--help", "-h"],
            names: &[
                ("-jar", Names::Stem),
                ("-m", Names::Module),
                ("--module", Names::Module),
            ],
            subcommands: NONE,
            clusters: false,
        },
        Runtime::Dotnet => Spec {
            takes_value: &[
                "--additionalprobingpath",
                "--additional-deps",
                "--depsfile",
                "--runtimeconfig",
                "--fx-version",
                "--roll-forward",
            ],
            no_script: NONE,
            names: &[],
            subcommands: &["exec"],
            clusters: false,
        },
        Runtime::Shell => Spec {
            takes_value: &["-o", "-O", "+o", "+O"],
            no_script: &["-c", "-s"],
            names: &[],
            subcommands: NONE,
            clusters: true,
        },
    }
}

/// The program an interpreter runs, named from its command line; `None` if `exe_name` is not
/// a known interpreter, it runs code from `-c`/`-e`/stdin, or the guess does not look like a
/// name. `args` is argv without argv\[0\].
pub(crate) fn from_command_line(exe_name: &str, args: &[&str]) -> Option<String> {
    let rt = runtime(exe_name)?;
    let spec = spec(rt);
    let mut positional_seen = false;
    let mut it = args.iter().copied();
    while let Some(a) = it.next() {
        if a == "--" {
            return script_name(rt, it.next()?);
        }
        if a == "-" {
            return None; // program on stdin
        }
        let is_option =
            (a.starts_with('-') || (rt == Runtime::Shell && a.starts_with('+'))) && a.len() > 1;
        if !is_option {
            if !positional_seen && spec.subcommands.contains(&a) {
                positional_seen = true;
                continue;
            }
            if spec.no_script.contains(&a) {
                return None; // `deno eval`, `bun x`
            }
            if rt == Runtime::Java && a.starts_with('@') {
                continue; // @argfile
            }
            return script_name(rt, a);
        }
        if spec.clusters && !a.starts_with("--") {
            // `-um mod`, `-mmod`, `-uc code`, `-Ilib`, `-W error`.
            let prefix = &a[..1]; // '-' or, for shells, '+'
            for (i, c) in a.char_indices().skip(1) {
                let opt = format!("{prefix}{c}");
                let rest = &a[i + c.len_utf8()..];
                if spec.no_script.contains(&opt.as_str()) {
                    return None;
                }
                if let Some(&(_, how)) = spec.names.iter().find(|(o, _)| *o == opt) {
                    let value = if rest.is_empty() { it.next()? } else { rest };
                    return named(how, value);
                }
                if spec.takes_value.contains(&opt.as_str()) {
                    if rest.is_empty() {
                        it.next();
                    }
                    break;
                }
            }
            continue;
        }
        // Whole-word options, `--opt=value` or `--opt value`.
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (a, None),
        };
        if spec.no_script.contains(&name) {
            return None;
        }
        if let Some(&(_, how)) = spec.names.iter().find(|(o, _)| *o == name) {
            let value = match inline {
                Some(v) => v,
                None => it.next()?,
            };
            return named(how, value);
        }
        if inline.is_none() && spec.takes_value.contains(&name) {
            it.next();
        }
    }
    None
}

/// The name for the first positional argument.
fn script_name(rt: Runtime, arg: &str) -> Option<String> {
    match rt {
        // A main class (`com.example.Main`) or, for the source launcher, `Main.java`.
        Runtime::Java if !arg.ends_with(".java") => plausible_name(arg),
        // Only an application dll: `dotnet run`, `dotnet test` are the SDK, not an app.
        Runtime::Dotnet if !arg.ends_with(".dll") => None,
        _ => plausible_name(stem(arg)?),
    }
}

fn named(how: Names, value: &str) -> Option<String> {
    match how {
        // Java `-m module/main.Class`: the class names the program better than the module.
        Names::Module => plausible_name(value.rsplit('/').next().unwrap_or(value)),
        Names::Stem => plausible_name(stem(value)?),
    }
}

fn stem(path: &str) -> Option<&str> {
    Path::new(path).file_stem()?.to_str()
}

/// A derived name is used only if it looks like a program name: 1 to 128 characters from
/// `A-Z a-z 0-9 . _ -`, at least one letter, and not an id, uuid, hex string or token by the
/// route heuristic ([`route::is_opaque`]). Anything else is more likely data than a name.
fn plausible_name(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_DERIVED_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && !route::is_opaque(s);
    ok.then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(cmdline: &str) -> Option<String> {
        let mut words = cmdline.split(' ');
        let exe = words.next().unwrap();
        let exe = exe.rsplit('/').next().unwrap();
        let args: Vec<&str> = words.collect();
        from_command_line(exe, &args)
    }

    #[test]
    fn names_from_command_lines() {
        let cases = [
            // Python family.
            ("python3 -u /srv/app/service_a.py --port 8080", Some("service_a")),
            ("python3 -m http.server 8000", Some("http.server")),
            ("python3.11 -mhttp.server", Some("http.server")),
            ("python -um uvicorn main:app", Some("uvicorn")),
            ("python3 -W ignore -X dev app.py", Some("app")),
            ("python3 -Wignore app.py", Some("app")),
            ("python3 -OO -B -- manage.py runserver", Some("manage")),
            ("pypy3 worker.py", Some("worker")),
            ("python3 -c print(1) script.py", None),
            ("python3 -uc print(1)", None),
            ("python3 - x.py", None),
            ("python3", None),
            // Node and friends.
            ("node server.js", Some("server")),
            ("/usr/local/bin/node --inspect=0.0.0.0:9229 -r dotenv/config dist/main.mjs", Some("main")),
            ("nodejs --max-old-space-size=4096 app.js", Some("app")),
            ("node -e require('x')", None),
            ("node --require ./tracing.js --title=api index.js", Some("index")),
            ("deno run --allow-net -c deno.json server.ts", Some("server")),
            ("deno eval console.log(1)", None),
            ("bun run src/index.ts", Some("index")),
            ("bun server.ts", Some("server")),
            // Ruby, Perl, PHP.
            ("ruby -Ilib -r bundler/setup bin/rails server", Some("rails")),
            ("ruby -e puts(1)", None),
            ("perl -Ilib -MStrict -w /opt/app/daemon.pl", Some("daemon")),
            ("perl -le print", None),
            ("php -d memory_limit=1G -f /var/www/worker.php", Some("worker")),
            ("php artisan serve", Some("artisan")),
            ("php -S 0.0.0.0:8000 -t public", None),
            ("php -r echo(1);", None),
            // Java.
            ("java -Xmx1g -Dspring.profiles.active=prod -jar /app/orders-1.2.jar --server.port=8080", Some("orders-1.2")),
            ("java -cp /app/lib/* com.example.OrderService", Some("com.example.OrderService")),
            ("java --module-path mods -m com.example.app/com.example.Main", Some("com.example.Main")),
            ("java --module=com.example.app", Some("com.example.app")),
            ("java @/tmp/args Main.java", Some("Main")),
            ("java -version", None),
            // .NET.
            ("dotnet /app/Orders.Api.dll", Some("Orders.Api")),
            ("dotnet exec --runtimeconfig x.json Billing.dll", Some("Billing")),
            ("dotnet run", None),
            // Shells.
            ("bash /docker-entrypoint.sh nginx", Some("docker-entrypoint")),
            ("sh -ex ./start.sh", Some("start")),
            ("bash -o pipefail deploy.sh", Some("deploy")),
            ("sh -c exec /app/server", None),
            // Not interpreters: the caller uses the executable name.
            ("nginx -g daemon off;", None),
            ("curl -s http://x", None),
            ("python-config app.py", None),
        ];
        for (cmdline, want) in cases {
            assert_eq!(name(cmdline).as_deref(), want, "{cmdline}");
        }
    }

    #[test]
    fn never_returns_data_as_a_name() {
        let cases = [
            // A misparsed option value that is a secret.
            "python3 --token s3cr3tTok3nV4lu3Abcdef12 app.py",
            "node --api-key 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b server.js",
            "java -Dx=1 550e8400-e29b-41d4-a716-446655440000",
            "python3 12345",
            "python3 /tmp/pass=word.py",
            "python3 /srv/caf\u{e9}.py",
            "ruby -e",
            "java -jar",
        ];
        for cmdline in cases {
            assert_eq!(name(cmdline), None, "{cmdline}");
        }
        let long = format!("python3 {}.py", "a".repeat(MAX_DERIVED_NAME + 1));
        assert_eq!(name(&long), None);
    }
}
