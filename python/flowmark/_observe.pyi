# Type stubs of flowmark.observe() (python/flowmark/_observe.py).
import os
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import pandas as pd

Record = dict[str, Any]

class Observation(Iterator[Record]):
    def __iter__(self) -> "Observation": ...
    def __next__(self) -> Record: ...
    @property
    def columns(self) -> list[str]: ...
    @property
    def stats(self) -> dict[str, Any]: ...
    def stop(self) -> None: ...
    def to_arrays(self) -> dict[str, Union[np.ndarray, np.ma.MaskedArray]]: ...
    def to_pandas(self) -> pd.DataFrame: ...

def observe(
    source: Union[str, os.PathLike[str], None] = ...,
    chains: Union[str, Iterable[str]] = ...,
    *,
    idle_timeout: float = ...,
    expiry_delay: float = ...,
    active_timeout: float = ...,
    max_flows: int = ...,
    filter: str = ...,
    registry: Union[str, os.PathLike[str], None] = ...,
    icmp_flows: bool = ...,
    vlan: bool = ...,
    tcp_completion: bool = ...,
    interface: Optional[str] = ...,
    capture: str = ...,
) -> Observation: ...
