"""medcf.train"""
