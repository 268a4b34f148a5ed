"""One stored compile artifact, typed: what a manifest's `artifacts` table holds per
name, read once after the manifest's schema check (store/schema.py). Its JSON form is
the manifest's, key for key, so entries written before these types existed read the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NATIVE = "native"
INDUCTOR = "inductor"
KNOWN_FORMATS = (NATIVE, INDUCTOR)


@dataclass(frozen=True)
class Artifact:
    """`native`: Inductor's generated CPU wrapper (`wrapper`) and its kernel libraries
    (`kernels`: source digest -> path). `inductor`: torch's CompiledArtifact (`binary`),
    the devices it runs on, its Triton kernels and those torch's static launcher cannot
    take (`dynamic_launch`). `guards`: Inductor's shape guards, read when it is reused
    (`has_guards` False: a record older than them, which is never reused)."""

    format: str
    guards: str | None = None
    has_guards: bool = True
    wrapper: str | None = None
    kernels: dict[str, str] = field(default_factory=dict)
    binary: str | None = None
    device_types: tuple[str, ...] = ()
    triton_kernels: int | None = None
    dynamic_launch: tuple[str, ...] | None = None
    partitions: int | None = None  # Inductor's CUDA-graph partitions (use_inductor_graph_partition)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        guarded = "guards" in data
        if data["format"] == NATIVE:
            return cls(NATIVE, data.get("guards"), guarded, wrapper=data["wrapper"], kernels=dict(data["kernels"]))
        launch = data.get("dynamic_launch")
        return cls(
            data["format"],
            data.get("guards"),
            guarded,
            binary=data["binary"],
            device_types=tuple(data.get("device_types") or ()),
            triton_kernels=data.get("triton_kernels"),
            dynamic_launch=tuple(launch) if launch is not None else None,
            partitions=data.get("partitions"),
        )

    def to_json(self, *, with_guards: bool = True) -> dict[str, Any]:
        """The manifest's record (without `guards` for the compile side's stored form)."""
        if self.format == NATIVE:
            found: dict[str, Any] = {"format": NATIVE, "wrapper": self.wrapper, "kernels": dict(self.kernels)}
        else:
            found = {"format": self.format, "binary": self.binary, "device_types": list(self.device_types)}
            if self.triton_kernels is not None:
                found["triton_kernels"] = self.triton_kernels
            if self.dynamic_launch is not None:
                found["dynamic_launch"] = list(self.dynamic_launch)
            if self.partitions is not None:
                found["partitions"] = self.partitions
        if with_guards and self.has_guards:
            found["guards"] = self.guards
        return found

    def paths(self) -> list[str]:
        """The entry files this artifact refers to."""
        if self.format == NATIVE:
            return [str(self.wrapper), *self.kernels.values()]
        return [str(self.binary)]
