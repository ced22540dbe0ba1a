# The hostenv-activate package. flake.nix calls this twice: with `pkgs`
# (dynamic, glibc) and with `pkgs.pkgsStatic` (one static musl binary; not
# static glibc, whose getgrouplist crashes when it loads NSS modules).
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
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

  # Integration test targets (tests/*.rs) that need no root. `real_node`
  # runs real systemd user managers as root in a mount namespace: it cannot
  # run in the build sandbox, so it is left to `.ci/run`.
  hermeticTests = lib.pipe (builtins.readDir ../tests) [
    (lib.filterAttrs (name: type: type == "regular" && lib.hasSuffix ".rs" name))
    lib.attrNames
    (map (lib.removeSuffix ".rs"))
    (lib.filter (name: name != "real_node"))
  ];
in
  rustPlatform.buildRustPackage {
    pname = manifest.name;
    inherit (manifest) version;
    inherit src;
    cargoLock.lockFile = ../Cargo.lock;

    nativeBuildInputs = [installShellFiles];

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
