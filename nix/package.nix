# The hostenv-activate package. flake.nix calls this twice: with `pkgs`
# (dynamic, glibc) and with `pkgs.pkgsStatic` (one static musl binary; not
# static glibc, whose getgrouplist crashes when it loads NSS modules).
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
  util-linux,
}: let
  manifest = (lib.importTOML ../Cargo.toml).package;

  # The crate and nothing else, so editing the Nix files or CI does not
  # rebuild it.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.difference ../. (lib.fileset.unions [
      ../nix
      ../flake.nix
      (lib.fileset.maybeMissing ../flake.lock)
      (lib.fileset.maybeMissing ../.ci)
      (lib.fileset.maybeMissing ../target)
    ]);
  };

  # Integration test targets (tests/*.rs) that need no root. The `real_*`
  # targets run real systemd user managers as root in mount namespaces: they
  # cannot run in the build sandbox, so they are left to `.ci/run`; nor can
  # `nix_module`, which runs Nix on the module with ../shared/vendor
  # (`.ci/nix-checks`; here, checks.nix's `module` does that job).
  hermeticTests = lib.pipe (builtins.readDir ../tests) [
    (lib.filterAttrs (name: type: type == "regular" && lib.hasSuffix ".rs" name))
    lib.attrNames
    (map (lib.removeSuffix ".rs"))
    (lib.filter (name: !lib.hasPrefix "real_" name && name != "nix_module"))
  ];
in
  rustPlatform.buildRustPackage {
    pname = manifest.name;
    inherit (manifest) version;
    inherit src;
    cargoLock.lockFile = ../Cargo.lock;

    nativeBuildInputs = [installShellFiles];
    # `setsid` for the test that a timeout also ends what left the group.
    nativeCheckInputs = [util-linux];

    # Unit tests plus the hermetic integration tests (fake provider on
    # loopback, stub programs; the sandbox has loopback but no network).
    cargoTestFlags = ["--lib" "--bins"] ++ map (name: "--test=${name}") hermeticTests;
    passthru = {inherit hermeticTests;};

    # Man page and completions come from the built binary, which renders
    # them from the same clap definition as --help.
    postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
      bin=$out/bin/hostenv-activate
      $bin --generate man > hostenv-activate.1
      installManPage hostenv-activate.1
      installShellCompletion --cmd hostenv-activate \
        --bash <($bin --generate bash) \
        --zsh <($bin --generate zsh) \
        --fish <($bin --generate fish)
    '';

    meta = {
      inherit (manifest) description;
      license = lib.licenses.mit;
      mainProgram = "hostenv-activate";
      platforms = lib.platforms.linux;
    };
  }
