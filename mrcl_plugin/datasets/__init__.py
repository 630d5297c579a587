from .stl10 import STL10, STL10FileError

__all__ = ['STL10', 'STL10FileError']
