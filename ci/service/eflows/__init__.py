"""eFlows4HPC's workflow registry in the image service.

A step of eFlows4HPC's workflow registry is a folder with `eflows4hpc.yaml` (`apt:`, `pip:`,
`spack:` sections), maybe `requirements.txt` and `post_inst.sh`. This package turns one such step,
for one machine, into a Docker definition the pipeline builds:

- `grammar`  the strict grammars every value passes (Debian package names, pip requirements,
             Spack specs, git versions) before it goes anywhere;
- `step`     reading a step folder, the Spack environment as eFlows4HPC's builder writes it, the
             recipe, and the staged definition folder;
- `git`      the registry and the software catalog as git (a cache of bare clones) or as folders;
- `requests` eFlows4HPC's request bodies as its clients send them (string booleans, `push`,
             `path`, platforms), coerced into the service's strict models;
- `login`    the short-lived tokens of `GET /login` that eFlows4HPC's `client.py` asks for.

The upstream builder (github.com/eflows4hpc/image_creation) is the specification of the meaning;
docs/eflows4hpc.md lists where we differ and why; docs/architecture.md places the package (layer 5,
inside the service).
"""
