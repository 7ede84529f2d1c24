//! The GitHub Actions workflow `.github/workflows/deploy.yml`: detect what changed, build it,
//! upload it over SSH and run `cutover deploy` on the server.
//!
//! Why it exists: the workflow this replaces looked at the last commit of a push only (so its
//! change detection never fired on a multi-commit push or a merge), disabled SSH host key
//! checking, and could run two deploys at once. The generated one:
//!
//! - runs on a push to the branch and on manual dispatch, with a `target` choice (`auto`, each
//!   component, and `both` for two components or `all` otherwise) and a `release` id that
//!   defaults to the commit SHA;
//! - `detect` job: for `auto` on a push, the components whose paths changed over the whole
//!   pushed range `github.event.before..github.sha` (a tree diff over a full clone, renames
//!   counted on both sides); every component when `before` is all zeros (new branch), unknown or
//!   not in the history (force push), or on a manual run. It runs `cutover changed --json` when
//!   `cutover` and `jq` are on the runner and the repository holds the config; otherwise an inline
//!   bash equivalent with the same glob semantics ([`bash_pattern`] translates each glob, and a
//!   test checks the translation against [`super::changes::glob`]);
//! - `deploy` job: builds each selected component with its argv (before the SSH key is on
//!   disk, and with no git credentials persisted, so build scripts see neither), uploads
//!   artifacts with `scp -p` (modes kept; directories as `.tar.gz` bundles) to `upload_dir/<release>/<component>`, runs
//!   `cutover deploy <components> --release <id> --artifact name=path ... --json` over `ssh`,
//!   then removes the upload;
//! - secrets `DEPLOY_SSH_KEY`, `DEPLOY_HOST`, `DEPLOY_USER`, `DEPLOY_KNOWN_HOSTS` (the output of
//!   `ssh-keyscan` checked by hand) and optionally `DEPLOY_PORT`; host keys are always checked
//!   (`StrictHostKeyChecking yes`);
//! - one `concurrency` group with `cancel-in-progress: false` (a running deploy is never
//!   cancelled), `timeout-minutes` on each job, `permissions: contents: read`;
//! - no `${{ }}` expression inside a `run:` script: event data, inputs and secrets reach the
//!   scripts through `env:` (script injection), and values from options are shell-quoted.
//!
//! Known limit of a push-range base: GitHub keeps one *pending* run per concurrency group, so
//! when three pushes arrive while a deploy runs, the middle one is cancelled before it starts,
//! and the last one's range (`before` = the middle push) misses the middle push's changes.
//! Run the workflow with `target: all` after such a burst, or deploy by hand.

use super::changes;

/// One component as the workflow sees it.
#[derive(Debug, Clone)]
pub struct WorkflowComponent {
    pub name: String,
    /// Globs relative to the repository root (see [`super::changes`]).
    pub paths: Vec<String>,
    /// The build argv, run from `working_directory` (e.g. `["go", "build", "-o", "dist/api",
    /// "./cmd/api"]`, or `["sh", "-c", "npm ci && npm run build"]`). Empty: nothing to build.
    pub build: Vec<String>,
    /// Where the build runs, relative to the repository root; `None` for the root.
    pub working_directory: Option<String>,
    /// The artifact after the build, relative to the repository root: an executable, a
    /// directory (sent as a `.tar.gz` bundle) or an archive. `None` for components that take
    /// no artifact (hooks).
    pub artifact: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WorkflowOptions {
    pub components: Vec<WorkflowComponent>,
    /// The branch whose pushes deploy.
    pub branch: String,
    /// The config file on the server (`cutover --config`).
    pub server_config: String,
    /// Where artifacts are uploaded on the server: a directory the SSH user can write and the
    /// daemon's user can read (not `/tmp` or `/home`: the daemon's unit hides them; not inside
    /// the daemon's `StateDirectory`, mode 0750). Default `/srv/cutover/uploads`, created with
    /// `install -d -o DEPLOY_USER -g cutover -m 2750 /srv/cutover/uploads`.
    pub upload_dir: String,
    /// How to run cutover on the server, e.g. `["cutover"]` or
    /// `["sudo", "-n", "-u", "cutover", "cutover"]` when the SSH user may not use the control
    /// socket itself.
    pub remote_cutover: Vec<String>,
    /// The config file in the repository, used by `cutover changed` when the runner has
    /// `cutover`; `None` always uses the inline detection.
    pub repo_config: Option<String>,
    /// `timeout-minutes` of the deploy job (detection gets 10).
    pub timeout_minutes: u32,
    /// A GitHub environment for the deploy job (protection rules, environment secrets).
    pub environment: Option<String>,
    pub runs_on: String,
}

impl Default for WorkflowOptions {
    fn default() -> Self {
        WorkflowOptions {
            components: Vec::new(),
            branch: "main".into(),
            server_config: "/etc/cutover/cutover.toml".into(),
            upload_dir: "/srv/cutover/uploads".into(),
            remote_cutover: vec!["cutover".into()],
            repo_config: Some("cutover.toml".into()),
            timeout_minutes: 30,
            environment: None,
            runs_on: "ubuntu-latest".into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkflowError {
    #[error("no components to deploy")]
    NoComponents,
    #[error("invalid component name {0:?}: use a-z, 0-9, '-' or '_', starting with a letter")]
    ComponentName(String),
    #[error("component name {0:?} is reserved for the workflow's target input")]
    Reserved(String),
    #[error("component {0:?} is listed twice")]
    Duplicate(String),
    #[error("{what} {value:?} cannot go into the workflow: {why}")]
    Unwritable {
        what: String,
        value: String,
        why: &'static str,
    },
    #[error("component {component}: invalid path glob {glob:?}: {message}")]
    Glob {
        component: String,
        glob: String,
        message: String,
    },
}

/// The workflow file's contents (`.github/workflows/deploy.yml`).
pub fn github_workflow(opts: &WorkflowOptions) -> Result<String, WorkflowError> {
    validate(opts)?;
    let names: Vec<&str> = opts.components.iter().map(|c| c.name.as_str()).collect();
    let every = if names.len() == 2 { "both" } else { "all" };
    let mut y = String::new();
    let w = &mut y;

    line(w, 0, "# Generated by `cutover generate github-workflow`.");
    line(
        w,
        0,
        "# Repository secrets: DEPLOY_SSH_KEY (private key), DEPLOY_HOST, DEPLOY_USER,",
    );
    line(
        w,
        0,
        "# DEPLOY_KNOWN_HOSTS (`ssh-keyscan HOST`, checked by hand), DEPLOY_PORT (optional).",
    );
    line(w, 0, "name: deploy");
    line(w, 0, "");
    line(w, 0, "on:");
    line(w, 1, "push:");
    line(w, 2, &format!("branches: [{}]", yq(&opts.branch)));
    line(w, 1, "workflow_dispatch:");
    line(w, 2, "inputs:");
    line(w, 3, "target:");
    line(
        w,
        4,
        "description: 'What to deploy: auto = the components whose paths changed'",
    );
    line(w, 4, "type: choice");
    line(w, 4, "default: auto");
    line(w, 4, "options:");
    line(w, 5, "- auto");
    for name in &names {
        line(w, 5, &format!("- {name}"));
    }
    line(w, 5, &format!("- {every}"));
    line(w, 3, "release:");
    line(w, 4, "description: 'Release id (default: the commit SHA)'");
    line(w, 4, "type: string");
    line(w, 4, "required: false");
    line(w, 4, "default: ''");
    line(w, 0, "");
    line(w, 0, "permissions:");
    line(w, 1, "contents: read");
    line(w, 0, "");
    line(
        w,
        0,
        "# One deploy at a time; a running deploy is never cancelled.",
    );
    line(w, 0, "concurrency:");
    line(w, 1, "group: cutover-deploy");
    line(w, 1, "cancel-in-progress: false");
    line(w, 0, "");
    line(w, 0, "defaults:");
    line(w, 1, "run:");
    line(w, 2, "shell: bash");
    line(w, 0, "");
    line(w, 0, "jobs:");

    // detect
    line(w, 1, "detect:");
    line(w, 2, &format!("runs-on: {}", yq(&opts.runs_on)));
    line(w, 2, "timeout-minutes: 10");
    line(w, 2, "outputs:");
    line(w, 3, "components: ${{ steps.detect.outputs.components }}");
    line(w, 3, "release: ${{ steps.detect.outputs.release }}");
    line(w, 2, "steps:");
    line(w, 3, "- uses: actions/checkout@v5");
    line(w, 4, "with:");
    line(w, 5, "fetch-depth: 0");
    line(w, 5, "persist-credentials: false");
    line(w, 3, "- id: detect");
    line(w, 4, "name: Components to deploy");
    line(w, 4, "env:");
    line(w, 5, "EVENT: ${{ github.event_name }}");
    line(w, 5, "TARGET: ${{ inputs.target }}");
    line(w, 5, "RELEASE_INPUT: ${{ inputs.release }}");
    line(w, 5, "BEFORE: ${{ github.event.before }}");
    line(w, 5, "HEAD_SHA: ${{ github.sha }}");
    line(w, 4, "run: |");
    detect_script(w, opts, every)?;

    // deploy
    line(w, 0, "");
    line(w, 1, "deploy:");
    line(w, 2, "needs: detect");
    line(w, 2, "if: needs.detect.outputs.components != ''");
    line(w, 2, &format!("runs-on: {}", yq(&opts.runs_on)));
    line(w, 2, &format!("timeout-minutes: {}", opts.timeout_minutes));
    if let Some(env) = &opts.environment {
        line(w, 2, &format!("environment: {}", yq(env)));
    }
    line(w, 2, "env:");
    line(w, 3, "COMPONENTS: ${{ needs.detect.outputs.components }}");
    line(w, 3, "RELEASE: ${{ needs.detect.outputs.release }}");
    line(w, 3, &format!("UPLOAD_DIR: {}", yq(&opts.upload_dir)));
    line(w, 2, "steps:");
    line(w, 3, "- uses: actions/checkout@v5");
    line(w, 4, "with:");
    line(w, 5, "persist-credentials: false");
    line(
        w,
        3,
        "# Builds run before the SSH key is written, so build scripts never see it.",
    );
    line(
        w,
        3,
        "# Set up toolchains here (actions/setup-go, actions/setup-node, ...) if the",
    );
    line(
        w,
        3,
        "# runner's preinstalled ones are not the versions you build with.",
    );
    for c in &opts.components {
        if c.build.is_empty() {
            continue;
        }
        line(w, 3, &format!("- name: Build {}", c.name));
        line(
            w,
            4,
            &format!(
                "if: contains(format(' {{0}} ', needs.detect.outputs.components), ' {} ')",
                c.name
            ),
        );
        if let Some(dir) = &c.working_directory {
            line(w, 4, &format!("working-directory: {}", yq(dir)));
        }
        let argv: Vec<String> = c.build.iter().map(|a| sq(a)).collect();
        line(w, 4, "run: |");
        line(w, 5, &argv.join(" "));
    }

    line(w, 3, "- name: Configure SSH (host keys are checked)");
    line(w, 4, "env:");
    line(w, 5, "DEPLOY_SSH_KEY: ${{ secrets.DEPLOY_SSH_KEY }}");
    line(
        w,
        5,
        "DEPLOY_KNOWN_HOSTS: ${{ secrets.DEPLOY_KNOWN_HOSTS }}",
    );
    line(w, 5, "DEPLOY_HOST: ${{ secrets.DEPLOY_HOST }}");
    line(w, 5, "DEPLOY_USER: ${{ secrets.DEPLOY_USER }}");
    line(w, 5, "DEPLOY_PORT: ${{ secrets.DEPLOY_PORT }}");
    line(w, 4, "run: |");
    for text in [
        "set -euo pipefail",
        "for v in DEPLOY_SSH_KEY DEPLOY_KNOWN_HOSTS DEPLOY_HOST DEPLOY_USER; do",
        "  if [ -z \"${!v:-}\" ]; then echo \"::error::repository secret $v is not set\"; exit 1; fi",
        "done",
        "umask 077",
        "mkdir -p ~/.ssh",
        "printf '%s\\n' \"$DEPLOY_SSH_KEY\" > ~/.ssh/deploy_key",
        "printf '%s\\n' \"$DEPLOY_KNOWN_HOSTS\" > ~/.ssh/known_hosts",
        "{",
        "  echo 'Host deploy-target'",
        "  echo \"  HostName $DEPLOY_HOST\"",
        "  echo \"  User $DEPLOY_USER\"",
        "  echo \"  Port ${DEPLOY_PORT:-22}\"",
        "  echo '  IdentityFile ~/.ssh/deploy_key'",
        "  echo '  IdentitiesOnly yes'",
        "  echo '  UserKnownHostsFile ~/.ssh/known_hosts'",
        "  echo '  StrictHostKeyChecking yes'",
        "  echo '  BatchMode yes'",
        "  echo '  ConnectTimeout 30'",
        "  echo '  ServerAliveInterval 15'",
        "} > ~/.ssh/config",
    ] {
        line(w, 5, text);
    }

    let with_artifact: Vec<&WorkflowComponent> = opts
        .components
        .iter()
        .filter(|c| c.artifact.is_some())
        .collect();
    // Components without an artifact (hooks) have nothing to upload: no step, and no unused
    // `dir` variable for shellcheck to report (SC2034).
    if !with_artifact.is_empty() {
        upload_step(w, &with_artifact);
    }

    line(w, 3, "- name: Deploy");
    line(w, 4, "run: |");
    line(w, 5, "set -euo pipefail");
    if !with_artifact.is_empty() {
        line(w, 5, "dir=\"$UPLOAD_DIR/$RELEASE\"");
    }
    let remote: Vec<String> = opts.remote_cutover.iter().map(|a| sq(a)).collect();
    line(
        w,
        5,
        &format!(
            "cmd=({} --config {} deploy)",
            remote.join(" "),
            sq(&opts.server_config)
        ),
    );
    line(w, 5, "for c in $COMPONENTS; do cmd+=(\"$c\"); done");
    line(
        w,
        5,
        "cmd+=(--release \"$RELEASE\" --who \"github:${GITHUB_ACTOR//[^A-Za-z0-9_.-]/}\" --json)",
    );
    if !with_artifact.is_empty() {
        let names: Vec<&str> = with_artifact.iter().map(|c| c.name.as_str()).collect();
        line(w, 5, "for c in $COMPONENTS; do");
        line(w, 5, "  case \"$c\" in");
        line(
            w,
            5,
            &format!(
                "    {}) cmd+=(--artifact \"$c=$dir/$c\") ;;",
                names.join("|")
            ),
        );
        line(w, 5, "  esac");
        line(w, 5, "done");
    }
    line(
        w,
        5,
        "ssh deploy-target -- \"$(printf '%q ' \"${cmd[@]}\")\"",
    );

    if !with_artifact.is_empty() {
        line(w, 3, "- name: Remove the uploaded artifacts");
        line(w, 4, "if: always()");
        line(w, 4, "run: |");
        line(
            w,
            5,
            "ssh deploy-target -- \"$(printf '%q ' rm -rf -- \"$UPLOAD_DIR/$RELEASE\")\" || true",
        );
    }
    Ok(y)
}

fn detect_script(w: &mut String, opts: &WorkflowOptions, every: &str) -> Result<(), WorkflowError> {
    let names: Vec<&str> = opts.components.iter().map(|c| c.name.as_str()).collect();
    let all = names.join(" ");
    let mut s: Vec<String> = vec![
        "set -euo pipefail".into(),
        "shopt -s extglob".into(),
        format!("all='{all}'"),
        "# Whether file $2 belongs to component $1: the config's globs, in bash (extglob).".into(),
        "matches() {".into(),
        "  local p pats=()".into(),
        "  case \"$1\" in".into(),
    ];
    for c in &opts.components {
        let mut pats = Vec::new();
        for g in &c.paths {
            let pattern = bash_pattern(g).map_err(|message| WorkflowError::Glob {
                component: c.name.clone(),
                glob: g.clone(),
                message,
            })?;
            pats.push(sq(&pattern));
        }
        s.push(format!("    {}) pats=({}) ;;", c.name, pats.join(" ")));
    }
    s.extend(
        [
            "  esac",
            "  for p in \"${pats[@]}\"; do",
            "    # shellcheck disable=SC2053 # $p is a glob on purpose",
            "    [[ $2 == $p ]] && return 0",
            "  done",
            "  return 1",
            "}",
            "release=${RELEASE_INPUT:-$HEAD_SHA}",
            "if [[ ! $release =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]]; then",
            "  echo '::error::release must be 1-64 characters A-Z a-z 0-9 . _ - starting with a letter or digit'",
            "  exit 1",
            "fi",
            "target=${TARGET:-auto}",
            "selected=''",
            "reason=''",
            "case \"$target\" in",
        ]
        .map(String::from),
    );
    let every = if every == "all" { "all" } else { "both|all" };
    s.push(format!(
        "  auto) ;;\n  {every}) selected=$all; reason=\"target $target\" ;;"
    ));
    s.push(format!(
        "  {}) selected=$target; reason=\"target $target\" ;;",
        names.join("|")
    ));
    s.extend(
        [
            "  *) echo '::error::unknown target'; exit 1 ;;",
            "esac",
            "if [ \"$target\" = auto ]; then",
            "  if [ \"$EVENT\" != push ]; then",
            "    selected=$all; reason='manual run: no pushed range, deploying all'",
            "  elif [[ ! $BEFORE =~ ^[0-9a-f]{40}([0-9a-f]{24})?$ ]] || [[ $BEFORE =~ ^0+$ ]]; then",
            "    selected=$all; reason='base is all zeros or unknown (a new branch?): deploying all'",
            "  elif ! git cat-file -e \"$BEFORE^{commit}\" 2>/dev/null; then",
            "    selected=$all; reason=\"base ${BEFORE:0:7} is not a commit in this repository: deploying all\"",
        ]
        .map(String::from),
    );
    if let Some(config) = &opts.repo_config {
        s.push(format!(
            "  elif command -v cutover >/dev/null && command -v jq >/dev/null && [ -f {} ]; then",
            sq(config)
        ));
        s.push(format!(
            "    selected=$(cutover --config {} changed --base \"$BEFORE\" --head \"$HEAD_SHA\" --json | jq -r '[.components[].name] | join(\" \")')",
            sq(config)
        ));
        s.push("    reason=\"cutover changed ${BEFORE:0:7}..${HEAD_SHA:0:7}\"".into());
    }
    s.extend(
        [
            "  else",
            "    files=()",
            "    while IFS= read -r -d '' f; do files+=(\"$f\"); done \\",
            "      < <(git diff --name-only --no-renames -z \"$BEFORE\" \"$HEAD_SHA\" --)",
            "    for c in $all; do",
            "      for f in \"${files[@]}\"; do",
            "        if matches \"$c\" \"$f\"; then selected=\"${selected:+$selected }$c\"; break; fi",
            "      done",
            "    done",
            "    reason=\"${#files[@]} files changed in ${BEFORE:0:7}..${HEAD_SHA:0:7}\"",
            "  fi",
            "fi",
            "echo \"Deploying: ${selected:-nothing} ($reason)\" | tee -a \"$GITHUB_STEP_SUMMARY\"",
            "echo \"components=$selected\" >> \"$GITHUB_OUTPUT\"",
            "echo \"release=$release\" >> \"$GITHUB_OUTPUT\"",
        ]
        .map(String::from),
    );
    for text in s {
        for l in text.lines() {
            line(w, 5, l);
        }
    }
    Ok(())
}

/// Uploads each selected component's artifact to `UPLOAD_DIR/RELEASE/COMPONENT` (directories
/// as `.tar.gz` bundles, modes kept).
fn upload_step(w: &mut String, with_artifact: &[&WorkflowComponent]) {
    line(w, 3, "- name: Upload artifacts");
    line(w, 4, "run: |");
    line(w, 5, "set -euo pipefail");
    line(w, 5, "dir=\"$UPLOAD_DIR/$RELEASE\"");
    line(
        w,
        5,
        "ssh deploy-target -- \"$(printf '%q ' mkdir -p -- \"$dir\")\"",
    );
    line(w, 5, "for c in $COMPONENTS; do");
    line(w, 5, "  case \"$c\" in");
    for c in with_artifact {
        let artifact = c.artifact.as_deref().unwrap_or_default();
        line(w, 5, &format!("    {}) src={} ;;", c.name, sq(artifact)));
    }
    line(w, 5, "    *) continue ;;");
    line(w, 5, "  esac");
    line(w, 5, "  if [ -d \"$src\" ]; then");
    line(
        w,
        5,
        "    tar -C \"$src\" -czf \"$RUNNER_TEMP/$c.tar.gz\" .",
    );
    line(w, 5, "    src=\"$RUNNER_TEMP/$c.tar.gz\"");
    line(w, 5, "  fi");
    line(w, 5, "  scp -q -p \"$src\" \"deploy-target:$dir/$c\"");
    line(w, 5, "done");
}

/// Translates a glob (semantics of [`changes::glob`]) into a bash extglob pattern for
/// `[[ $path == $pattern ]]`: `*` → `*([!/])`, `?` → `[!/]`, `**/` → `?(*/)`, a final `/**` or
/// a lone `**` → `*`, `{a,b}` → `@(a|b)`; bash's own pattern characters are escaped.
pub fn bash_pattern(glob: &str) -> Result<String, String> {
    changes::glob(glob).map_err(|e| e.kind().to_string())?;
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err("dangling backslash".into());
                };
                out.push('\\');
                out.push(next);
                i += 2;
                continue;
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                let boundary_before = prev.is_none()
                    || prev == Some('/')
                    || (depth > 0 && matches!(prev, Some('{') | Some(',')));
                let next = chars.get(i + 2).copied();
                let end = next.is_none() || (depth > 0 && matches!(next, Some(',') | Some('}')));
                if boundary_before && next == Some('/') {
                    out.push_str("?(*/)");
                    i += 3;
                } else if boundary_before && end {
                    out.push('*');
                    i += 2;
                } else {
                    out.push_str("*([!/])");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("*([!/])"),
            '?' => out.push_str("[!/]"),
            '[' => {
                // Copied as is up to the closing bracket (a `]` right after `[` or `[!` is literal).
                let mut j = i + 1;
                if matches!(chars.get(j), Some('!') | Some('^')) {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unclosed character class".into());
                }
                let class: String = chars[i..=j].iter().collect();
                if class.contains('/') {
                    return Err("a character class cannot contain '/'".into());
                }
                out.push_str(&class.replacen("[^", "[!", 1));
                i = j + 1;
                continue;
            }
            '{' => {
                depth += 1;
                out.push_str("@(");
            }
            ',' if depth > 0 => out.push('|'),
            '}' if depth > 0 => {
                depth -= 1;
                out.push(')');
            }
            '(' | ')' | '|' | '@' | '!' | '+' | ']' | '}' | ',' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

fn validate(opts: &WorkflowOptions) -> Result<(), WorkflowError> {
    if opts.components.is_empty() {
        return Err(WorkflowError::NoComponents);
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &opts.components {
        let name = &c.name;
        let ok = name.len() <= 48
            && name.starts_with(|ch: char| ch.is_ascii_lowercase())
            && name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_');
        if !ok {
            return Err(WorkflowError::ComponentName(name.clone()));
        }
        if matches!(name.as_str(), "auto" | "all" | "both") {
            return Err(WorkflowError::Reserved(name.clone()));
        }
        if !seen.insert(name.as_str()) {
            return Err(WorkflowError::Duplicate(name.clone()));
        }
        for (i, arg) in c.build.iter().enumerate() {
            text(&format!("components.{name}.build[{i}]"), arg)?;
        }
        for (i, glob) in c.paths.iter().enumerate() {
            text(&format!("components.{name}.paths[{i}]"), glob)?;
        }
        if let Some(dir) = &c.working_directory {
            relative(&format!("components.{name}.working_directory"), dir)?;
        }
        if let Some(artifact) = &c.artifact {
            relative(&format!("components.{name}.artifact"), artifact)?;
        }
    }
    text("branch", &opts.branch)?;
    text("runs_on", &opts.runs_on)?;
    absolute("server_config", &opts.server_config)?;
    absolute("upload_dir", &opts.upload_dir)?;
    if opts.remote_cutover.is_empty() {
        return Err(WorkflowError::Unwritable {
            what: "remote_cutover".into(),
            value: String::new(),
            why: "empty command",
        });
    }
    for arg in &opts.remote_cutover {
        text("remote_cutover", arg)?;
    }
    if let Some(config) = &opts.repo_config {
        relative("repo_config", config)?;
    }
    if let Some(env) = &opts.environment {
        text("environment", env)?;
    }
    Ok(())
}

/// Text that becomes part of the YAML or a script: one line, no Actions expression.
fn text(what: &str, value: &str) -> Result<(), WorkflowError> {
    let why = if value.is_empty() {
        "empty"
    } else if value.chars().any(char::is_control) {
        "contains a newline or control character"
    } else if value.contains("${{") {
        "contains `${{`, which GitHub Actions would evaluate"
    } else {
        return Ok(());
    };
    Err(WorkflowError::Unwritable {
        what: what.to_owned(),
        value: value.to_owned(),
        why,
    })
}

fn relative(what: &str, value: &str) -> Result<(), WorkflowError> {
    text(what, value)?;
    if value.starts_with('/') || value.split('/').any(|part| part == "..") {
        return Err(WorkflowError::Unwritable {
            what: what.to_owned(),
            value: value.to_owned(),
            why: "must be a path inside the repository",
        });
    }
    Ok(())
}

fn absolute(what: &str, value: &str) -> Result<(), WorkflowError> {
    text(what, value)?;
    if !value.starts_with('/') {
        return Err(WorkflowError::Unwritable {
            what: what.to_owned(),
            value: value.to_owned(),
            why: "must be an absolute path on the server",
        });
    }
    Ok(())
}

fn line(w: &mut String, indent: usize, text: &str) {
    if !text.is_empty() {
        for _ in 0..indent {
            w.push_str("  ");
        }
        w.push_str(text);
    }
    w.push('\n');
}

/// A single-quoted YAML scalar.
fn yq(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A single-quoted shell word (quotes only when needed, for readable scripts).
fn sq(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::process::Command;

    #[test]
    fn bash_patterns() {
        assert_eq!(bash_pattern("backend/**").unwrap(), "backend/*");
        assert_eq!(bash_pattern("**/*.go").unwrap(), "?(*/)*([!/]).go");
        assert_eq!(bash_pattern("a/**/b").unwrap(), "a/?(*/)b");
        assert_eq!(bash_pattern("{a,b}/**").unwrap(), "@(a|b)/*");
        assert_eq!(bash_pattern("x(1)").unwrap(), "x\\(1\\)");
        assert!(bash_pattern("a/[").is_err());
    }

    /// The inline detection in the workflow must agree with `cutover changed` on every glob.
    #[test]
    fn bash_translation_agrees_with_globset() {
        if Command::new("bash").arg("--version").output().is_err() {
            eprintln!("skipped: no bash");
            return;
        }
        let globs = [
            "backend/**",
            "backend/*",
            "go.mod",
            "**/*.go",
            "*.md",
            "a/**/b",
            "{backend,shared}/**",
            "{**/*.rs,Cargo.*}",
            "src/?.c",
            "web/[abc]*.js",
            "web/[!abc]*.js",
            "x(1)|y",
            "docs/**/*.{md,txt}",
            "**",
            "a**b/c",
        ];
        let paths = [
            "backend",
            "backend/main.go",
            "backend/cmd/api/main.go",
            "go.mod",
            "sub/go.mod",
            "main.go",
            "a/b/c.go",
            "README.md",
            "docs/x.md",
            "docs/a/b/x.txt",
            "a/b",
            "a/x/y/b",
            "ab",
            "shared/lib.rs",
            "lib.rs",
            "Cargo.toml",
            "crates/x/src/lib.rs",
            "src/a.c",
            "src/ab.c",
            "src/a/c",
            "web/a1.js",
            "web/d1.js",
            "web/x/a.js",
            "x(1)|y",
            "x1y",
            "aXb/c",
            "a/b/c",
            ".github/workflows/deploy.yml",
        ];
        let mut script = String::from("shopt -s extglob\n");
        let mut expected = String::new();
        for g in globs {
            let m = changes::glob(g).unwrap().compile_matcher();
            let p = bash_pattern(g).unwrap();
            for path in paths {
                // Unquoted expansion of a variable, as in the workflow.
                let _ = writeln!(
                    script,
                    "p={}; if [[ {} == $p ]]; then echo 1; else echo 0; fi",
                    sq(&p),
                    sq(path)
                );
                expected.push_str(if m.is_match(path) { "1\n" } else { "0\n" });
            }
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        let (mut i, mut diffs) = (0, Vec::new());
        for g in globs {
            for path in paths {
                let (e, o) = (&expected[i * 2..i * 2 + 1], &got[i * 2..i * 2 + 1]);
                if e != o {
                    diffs.push(format!("{g} vs {path}: globset {e}, bash {o}"));
                }
                i += 1;
            }
        }
        assert!(diffs.is_empty(), "{diffs:#?}");
    }

    #[test]
    fn refuses_expressions_and_reserved_names() {
        let component = |name: &str| WorkflowComponent {
            name: name.into(),
            paths: vec!["x/**".into()],
            build: vec![],
            working_directory: None,
            artifact: None,
        };
        let mut opts = WorkflowOptions {
            components: vec![component("auto")],
            ..WorkflowOptions::default()
        };
        assert_eq!(
            github_workflow(&opts),
            Err(WorkflowError::Reserved("auto".into()))
        );
        opts.components = vec![component("api")];
        opts.components[0].build = vec![
            "echo".into(),
            "${{ github.event.head_commit.message }}".into(),
        ];
        assert!(matches!(
            github_workflow(&opts),
            Err(WorkflowError::Unwritable { .. })
        ));
        opts.components = vec![component("api")];
        opts.components[0].artifact = Some("../x".into());
        assert!(github_workflow(&opts).is_err());
    }
}
